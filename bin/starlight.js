#!/usr/bin/env node
// Entry point: the compiled CLI lives in dist/ (`npm run build`).
import { main } from '../dist/src/cli/main.js';
main(process.argv.slice(2)).then((code) => { process.exitCode = code; });
