// Catastrophic backtracking.
({ rules: [{ timer: 300, handler() {
  return /^(a+)+$/.test("a".repeat(40) + "b");
} }] })
