/** Public surface of the delta stream v1 (docs/protocol.md), shared by proxy and worker. */
export * from './constants.js';
export type * from './types.js';
export { DeltaEncoder, headerBytes } from './encoder.js';
export { DeltaDecoder, decodeDelta } from './decoder.js';
export * from './traces.js';
