// Test agent: keep asking the node's first space for a greeting until one answers, then log it.
// The timeout covers a BLE round trip (request and reply each advertised for Δt = 500 ms).
({
  got: false,
  rules: [
    { timer: 400, handler() {
        if (this.got || this.asking) return;
        this.asking = true;
        spaces[Object.keys(spaces)[0]].rd(["HELLO", STR, INT16], 2500).then((r) => {
          this.asking = false;
          if (r && !this.got) { this.got = true; log("GOT " + JSON.stringify(r.tuple)); }
        });
      } },
  ],
})
