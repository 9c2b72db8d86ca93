// Test agent: keep asking the UDP space for a greeting until one answers, then log it.
({
  got: false,
  rules: [
    { timer: 400, handler() {
        if (this.got) return;
        spaces["udp-ts"].rd(["HELLO", STR, INT16], 300).then((r) => {
          if (r && !this.got) { this.got = true; log("GOT " + JSON.stringify(r.tuple)); }
        });
      } },
  ],
})
