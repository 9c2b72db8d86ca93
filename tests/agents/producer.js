// Test agent: once the node is up, store a greeting in this node's first space (udp-ts, or
// ble-ts on a BLE-only node), where remote `rd` requests find it.
({
  rules: [
    { timer: 200, once: true, handler() { host.out(["HELLO", "from-agent", 42]); log("stored"); } },
  ],
})
