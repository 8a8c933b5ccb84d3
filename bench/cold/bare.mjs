// Cold-start baseline: starts the runtime and prints one line, nothing else.
console.log("ok");
