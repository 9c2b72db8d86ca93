// sort of a large typed array with a comparator that re-enters native code.
({ rules: [{ timer: 300, handler() {
  const u8 = new Uint8Array(1 << 20);
  for (let i = 0; i < u8.length; i++) u8[i] = (i * 7919) & 255;
  const big = "z".repeat(1 << 14);
  u8.sort((a, b) => big.indexOf("q") + a - b);
  return u8[0];
} }] })
