// Test agent: once the node is up, store a greeting in this node's UDP space, where remote `rd`
// requests find it.
({
  rules: [
    { timer: 200, once: true, handler() { spaces["udp-ts"].host.out(["HELLO", "from-agent", 42]); log("stored"); } },
  ],
})
