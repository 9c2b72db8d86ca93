// Test agent (tests/agents_worker_waits.rs): issue 13's agent actions in the worker process —
// requests that wait, locally, over the air and both; the bulk queries; removal events — each
// step logged for the test to check.
({
  init() {
    this.run().catch((e) => log(`error ${e}`));
  },
  async run() {
    const sp = spaces["udp-ts"];
    log("waiting for L");
    const l = await sp.rd(["L", INT16], { wait: 30, scope: "local" });
    log(`local rd ${JSON.stringify(l && l.tuple)} from ${l && l.from}`);
    const n = await sp.rd(["N", INT16], { wait: 30 });
    log(`network rd ${JSON.stringify(n && n.tuple)} from ${n && n.from}`);
    const b = await sp.rd(["B", 3], { wait: 30, scope: "both" });
    log(`both rd ${JSON.stringify(b && b.tuple)} from ${b && b.from}`);
    const all = await sp.host.rdAll(["B", INT16]);
    log(`rdAll ${all.map((t) => t[1]).join(",")}`);
    const taken = await sp.host.inpAll(["B", INT16]);
    log(`inpAll ${taken.map((t) => t[1]).join(",")}`);
    log(`left ${await sp.host.count(["B", ANY])}`);
    sp.host.out(["M", 1]);
    log(`rm ${await sp.host.rm(["M", ANY])}`);
    const none = await sp.inp(["X"], { timeout: 200, scope: "local" });
    log(`local inp ${none}`);
  },
  rules: [
    { ts: ["B", ANY], kind: "removed",
      handler(t, ev) { log(`removed ${JSON.stringify(t)} ${ev.kind} from ${ev.from}`); } },
    { ts: ["E", ANY], kind: "expired",
      handler(t, ev) { log(`removed ${JSON.stringify(t)} ${ev.kind}`); } },
    { ts: ["R", ANY], kind: ["inp", "rm"],
      handler(t, ev) { log(`removed ${JSON.stringify(t)} ${ev.kind}`); } },
    { ts: ["M", ANY], kind: "removed",
      handler(t, ev) { log(`removed ${JSON.stringify(t)} ${ev.kind}`); } },
  ],
})
