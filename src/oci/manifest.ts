/**
 * Manifest documents: decide whether bytes are an image manifest or an index (OCI or Docker
 * schema2), and check the fields the client relies on.
 *
 * Not here: digests (digest.ts), platform choice (platform.ts). Docker schema1 is refused.
 */
import { StarlightError } from '../errors.js';
import { isDigest } from './digest.js';
import { MEDIA_TYPES, type Descriptor, type ImageIndex, type ImageManifest } from './types.js';

/** Accept header for manifest GETs: every manifest and index type we can read, preferred first. */
export const MANIFEST_ACCEPT = [
  MEDIA_TYPES.ociIndex,
  MEDIA_TYPES.ociManifest,
  MEDIA_TYPES.dockerManifestList,
  MEDIA_TYPES.dockerManifest,
].join(', ');

const INDEX_TYPES: ReadonlySet<string> = new Set([MEDIA_TYPES.ociIndex, MEDIA_TYPES.dockerManifestList]);
const MANIFEST_TYPES: ReadonlySet<string> = new Set([MEDIA_TYPES.ociManifest, MEDIA_TYPES.dockerManifest]);

export type ManifestDocument =
  | { kind: 'index'; mediaType: string; index: ImageIndex }
  | { kind: 'manifest'; mediaType: string; manifest: ImageManifest };

function bad(subject: string, why: string): StarlightError {
  return new StarlightError('SL_ERR_OCI_MANIFEST', `${subject}: ${why}`, { details: { subject } });
}

function isDescriptor(d: unknown): d is Descriptor {
  const x = d as Descriptor;
  return (
    typeof x === 'object' && x !== null && typeof x.mediaType === 'string' && typeof x.digest === 'string' &&
    isDigest(x.digest) && Number.isSafeInteger(x.size) && x.size >= 0
  );
}

/**
 * Parses manifest bytes. The media type is the Content-Type if it is a known one, else the
 * document's own `mediaType`, else inferred from its fields (`manifests` → index, `config` → manifest).
 */
export function parseManifestDocument(bytes: Buffer, contentType: string | null, subject: string): ManifestDocument {
  let doc: Record<string, unknown>;
  try {
    doc = JSON.parse(bytes.toString('utf8')) as Record<string, unknown>;
  } catch (err) {
    throw bad(subject, `manifest is not JSON (${(err as Error).message})`);
  }
  if (typeof doc !== 'object' || doc === null) throw bad(subject, 'manifest is not a JSON object');
  const ct = contentType?.split(';')[0].trim().toLowerCase() ?? '';
  let mediaType = INDEX_TYPES.has(ct) || MANIFEST_TYPES.has(ct) ? ct : typeof doc.mediaType === 'string' ? doc.mediaType : '';
  if (mediaType === '') mediaType = Array.isArray(doc.manifests) ? MEDIA_TYPES.ociIndex : MEDIA_TYPES.ociManifest;
  if (doc.schemaVersion !== 2) throw bad(subject, `unsupported manifest schemaVersion ${String(doc.schemaVersion)} (only 2; docker schema1 is not supported)`);
  if (INDEX_TYPES.has(mediaType)) {
    if (!Array.isArray(doc.manifests) || !doc.manifests.every(isDescriptor)) throw bad(subject, 'index has a malformed manifests list');
    return { kind: 'index', mediaType, index: doc as unknown as ImageIndex };
  }
  if (MANIFEST_TYPES.has(mediaType)) {
    if (!isDescriptor(doc.config)) throw bad(subject, 'manifest has a malformed config descriptor');
    if (!Array.isArray(doc.layers) || !doc.layers.every(isDescriptor)) throw bad(subject, 'manifest has a malformed layers list');
    return { kind: 'manifest', mediaType, manifest: doc as unknown as ImageManifest };
  }
  throw bad(subject, `unsupported manifest media type "${mediaType}"`);
}
