// Takes 5 ms over every ("BURST", ?) OUT: the node reads its socket slower than a burst comes.
({ rules: [{ ts: '("BURST", ?)', handler(t) {
  const end = Date.now() + 5;
  while (Date.now() < end) {}
} }] })
