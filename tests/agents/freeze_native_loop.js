// One long native call per iteration, each shorter than the interpreter's poll interval.
({ rules: [{ timer: 300, handler() {
  const s = "ab".repeat(1 << 15);
  let n = 0;
  for (let i = 0; i < 1e6; i++) n += s.lastIndexOf("b".repeat(4000) + "c");
  return n;
} }] })
