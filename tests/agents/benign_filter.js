// A request filter that lets every request through: the node must keep consulting it (and so
// keep answering) while other agents on the node misbehave.
({
  seen: 0,
  rules: [
    { request: "*", handler(template, ev) { this.seen++; return true; } },
  ],
})
