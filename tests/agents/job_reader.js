// Test agent: read a ("JOB", n) from the space until one answers, then log it.
({
  got: false,
  rules: [
    { timer: 300, handler() {
        if (this.got || this.asking) return;
        this.asking = true;
        spaces[Object.keys(spaces)[0]].rd(["JOB", INT16], 1000).then((r) => {
          this.asking = false;
          if (r && !this.got) { this.got = true; log("GOT " + JSON.stringify(r.tuple)); }
        });
      } },
  ],
})
