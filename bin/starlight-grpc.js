#!/usr/bin/env node
// The original Starlight's command line: `starlight-grpc run --server URL --socket PATH` is an alias
// of `starlight snapshotter --proxy URL --socket PATH`.
import { main } from '../dist/src/cli/main.js';
main(['starlight-grpc', ...process.argv.slice(2)]).then((code) => { process.exitCode = code; });
