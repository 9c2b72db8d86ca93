// 64 timer rules at the minimum interval, each busy for 9 ms (under the 10 ms event budget):
// no single event faults, together they would keep the agent thread at 100 %.
({ rules: Array.from({ length: 64 }, () => ({ timer: 10, handler() {
  const end = Date.now() + 9;
  while (Date.now() < end) {}
} })) })
