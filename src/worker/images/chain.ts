/**
 * Pure helpers of a lazy pull: chain IDs (OCI image-spec config.md "Layer ChainID"), the name an
 * image is recorded under in containerd, and the remote ids our snapshots carry.
 *
 * Not here: I/O of any kind.
 */
import { createHash } from 'node:crypto';
import { StarlightError } from '../../errors.js';
import { SHA256_DIGEST_PATTERN } from '../../oci/digest.js';
import { formatReference, parseReference, withDigest } from '../../oci/reference.js';

/** chainID(L0) = diffID(L0); chainID(Ln) = sha256(chainID(Ln-1) + " " + diffID(Ln)). */
export function chainIds(diffIDs: readonly string[]): string[] {
  const out: string[] = [];
  for (const d of diffIDs) {
    const prev = out[out.length - 1];
    out.push(prev === undefined ? d : 'sha256:' + createHash('sha256').update(`${prev} ${d}`).digest('hex'));
  }
  return out;
}

/**
 * The image name as `ctr` users write it and containerd stores it: fully qualified
 * (`docker.io/library/x:latest` for `x`), tag kept, `:latest` added when neither tag nor digest.
 */
export function imageName(ref: string): string {
  return formatReference(parseReference(ref));
}

/** The same repository pinned to `digest`: what a resumed stream asks for (the tag may have moved). */
export function pinnedRef(ref: string, digest: string): string {
  return formatReference(withDigest(parseReference(ref), digest));
}

/** Remote id of the chain ending at layer `index` of image `manifestDigest` (labels.ts LABEL_REMOTE). */
export function remoteIdFor(manifestDigest: string, index: number): string {
  return `${manifestDigest}/${index}`;
}

/** '<manifest digest>/<layer index>': a remote snapshot's id. */
const REMOTE_ID_RE = new RegExp(`^(${SHA256_DIGEST_PATTERN})/(\\d+)$`);

export function parseRemoteId(remoteId: string): { manifestDigest: string; index: number } {
  const m = REMOTE_ID_RE.exec(remoteId);
  if (!m) throw new StarlightError('SL_ERR_IMAGE_NOT_PULLED', `remote id ${JSON.stringify(remoteId)} is not <manifest digest>/<layer index>`, { details: { remoteId } });
  return { manifestDigest: m[1]!, index: Number(m[2]) };
}
