// Beacon router agent of the BeeTS demo (paper §7): light readings and survey answers that
// mobiles publish over BLE move to the building server over UDP; survey questions from the
// server move to the mobiles around the beacon. Loaded by `examples/demo.rs` and usable with
// `beets node --agent examples/agents/beacon.js`.
({
  light: 0,
  answers: 0,
  surveys: 0,
  luxSum: 0,
  rules: [
    // BLE → UDP: a light reading. Consumed (true): the beacon keeps no copy, the tuple moves.
    { ts: '("SENSOR", "LIGHT", ?int16, ?int16)', space: "ble-ts", kind: "out",
      handler(t) {
        this.light++;
        this.luxSum += t[2];
        spaces["udp-ts"].out(t, 60);
        return true;
      } },
    // BLE → UDP: an answer to a survey.
    { ts: '("ANSWER", ?int16, ?int16)', space: "ble-ts", kind: "out",
      handler(t) { this.answers++; spaces["udp-ts"].out(t, 60); return true; } },
    // UDP → BLE: a survey question, advertised to the mobiles in range for 30 s.
    { ts: '("SURVEY", ?int16, ?str)', space: "udp-ts", kind: "out",
      handler(t) { this.surveys++; spaces["ble-ts"].out(t, 30); return true; } },
    // Other beacons' forwards seen on UDP, and our own surveys heard back on BLE: not ours.
    { ts: '("SENSOR", "LIGHT", ?, ?)', space: "udp-ts", kind: "out", handler() { return true; } },
    { ts: '("ANSWER", ?, ?)', space: "udp-ts", kind: "out", handler() { return true; } },
    { ts: '("SURVEY", ?, ?)', space: "ble-ts", kind: "out", handler() { return true; } },
    // Every 5 s, publish this beacon's aggregate on its own UDP space (local only).
    { timer: 5000, handler() {
        const avg = this.light ? Math.round(this.luxSum / this.light) : 0;
        spaces["udp-ts"].host.out(["BEACON", "AVG", avg, this.light & 0x7fff], 10);
      } },
  ],
})
