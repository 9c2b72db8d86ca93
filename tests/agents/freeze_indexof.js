// A naive O(n·m) search in native code: seconds of CPU the interrupt handler never sees.
({ rules: [{ timer: 300, handler() {
  const s = "x".repeat(1 << 16);
  return s.indexOf("x".repeat(1 << 15) + "y");
} }] })
