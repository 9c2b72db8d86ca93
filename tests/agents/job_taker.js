// Test agent of a node without the space's key: keeps trying to take ("JOB", n).
({
  rules: [
    { timer: 200, handler() {
        spaces[Object.keys(spaces)[0]].inp(["JOB", INT16], 150).then((r) => {
          if (r) log("TOOK " + JSON.stringify(r.tuple));
        });
      } },
  ],
})
