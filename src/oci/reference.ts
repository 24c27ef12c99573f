/**
 * Image references: parse and format `[registry/]repository[:tag][@digest]` the way docker does
 * (distribution/reference's grammar and its "normalized named" rules).
 *
 * `ubuntu` → docker.io/library/ubuntu:latest. The first path component is a registry only if it holds
 * '.' or ':', is `localhost`, or has upper case (docker's splitDockerDomain rule). Only sha256 digests
 * are accepted, because only those can be verified here.
 *
 * Not here: network (client.ts), platform selection (platform.ts), the registry's API host or scheme
 * beyond `apiHost()`.
 */
import { StarlightError } from '../errors.js';
import { isDigest } from './digest.js';

export interface Reference {
  /** Registry host[:port] as the user named it, 'docker.io' for Docker Hub. */
  registry: string;
  /** Repository path, lower case, e.g. 'library/ubuntu'. */
  repository: string;
  /** Tag; 'latest' when the input named neither tag nor digest. */
  tag?: string;
  /** 'sha256:<64 lower-case hex>'. When present it wins over the tag for resolution. */
  digest?: string;
}

/** Docker Hub's canonical name in references, and the host its API is served from. */
export const DOCKER_HUB = 'docker.io';
export const DOCKER_HUB_API = 'registry-1.docker.io';
/** Docker's legacy alias for Docker Hub, normalized to DOCKER_HUB. */
const DOCKER_HUB_LEGACY = 'index.docker.io';
/** Namespace docker adds to single-component Docker Hub names. */
const OFFICIAL_NAMESPACE = 'library';
const DEFAULT_TAG = 'latest';
/** distribution/reference NameTotalLengthMax (registry + '/' + repository). */
const NAME_MAX = 255;

const DOMAIN_COMPONENT = String.raw`(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])`;
const IPV6 = String.raw`\[(?:[a-fA-F0-9:]+)\]`;
const DOMAIN_RE = new RegExp(String.raw`^(?:${DOMAIN_COMPONENT}(?:\.${DOMAIN_COMPONENT})*|${IPV6})(?::[0-9]+)?$`);
const PATH_COMPONENT_RE = /^[a-z0-9]+(?:(?:[._]|__|[-]+)[a-z0-9]+)*$/;
const TAG_RE = /^[\w][\w.-]{0,127}$/;
const ANY_DIGEST_RE = /^[A-Za-z][A-Za-z0-9]*(?:[-_+.][A-Za-z][A-Za-z0-9]*)*:[0-9a-fA-F]{32,}$/;
const HEX64_RE = /^[a-f0-9]{64}$/;

function bad(input: string, why: string): StarlightError {
  return new StarlightError('SL_ERR_OCI_REFERENCE', `invalid image reference "${input}": ${why}`, {
    details: { reference: input },
  });
}

/** Parses a reference; throws SL_ERR_OCI_REFERENCE with the reason when it is malformed. */
export function parseReference(input: string): Reference {
  if (typeof input !== 'string' || input.length === 0) throw bad(String(input), 'empty');
  let rest = input;
  let digest: string | undefined;
  const at = rest.indexOf('@');
  if (at >= 0) {
    digest = rest.slice(at + 1);
    rest = rest.slice(0, at);
    if (!ANY_DIGEST_RE.test(digest)) throw bad(input, `malformed digest "${digest}"`);
    if (!isDigest(digest)) throw bad(input, `unsupported digest "${digest}" (only sha256:<64 lower-case hex>)`);
  }
  let tag: string | undefined;
  const lastSlash = rest.lastIndexOf('/');
  const colon = rest.lastIndexOf(':');
  if (colon > lastSlash) {
    tag = rest.slice(colon + 1);
    rest = rest.slice(0, colon);
    if (!TAG_RE.test(tag)) throw bad(input, `malformed tag "${tag}"`);
  }
  if (rest.length === 0) throw bad(input, 'missing repository name');
  if (rest.length > NAME_MAX) throw bad(input, `name longer than ${NAME_MAX} characters`);

  const { registry, path } = splitRegistry(rest);
  if (registry !== undefined && !DOMAIN_RE.test(registry)) throw bad(input, `malformed registry host "${registry}"`);
  if (path !== path.toLowerCase()) throw bad(input, 'repository name must be lowercase');
  const components = path.split('/');
  for (const c of components) {
    if (!PATH_COMPONENT_RE.test(c)) throw bad(input, `malformed repository component "${c}"`);
  }
  // docker refuses names that look like an image ID, to avoid confusing them with one.
  if (registry === undefined && components.length === 1 && HEX64_RE.test(path)) {
    throw bad(input, 'repository name must not be a 64-character hex string (that is an image ID)');
  }

  let reg = registry ?? DOCKER_HUB;
  if (reg === DOCKER_HUB_LEGACY) reg = DOCKER_HUB;
  const repository = reg === DOCKER_HUB && components.length === 1 ? `${OFFICIAL_NAMESPACE}/${path}` : path;
  if (tag === undefined && digest === undefined) tag = DEFAULT_TAG;
  const ref: Reference = { registry: reg, repository };
  if (tag !== undefined) ref.tag = tag;
  if (digest !== undefined) ref.digest = digest;
  return ref;
}

function splitRegistry(name: string): { registry?: string; path: string } {
  const slash = name.indexOf('/');
  if (slash < 0) return { path: name };
  const first = name.slice(0, slash);
  const isRegistry = /[.:]/.test(first) || first === 'localhost' || first !== first.toLowerCase();
  return isRegistry ? { registry: first, path: name.slice(slash + 1) } : { path: name };
}

/** The fully qualified form: `registry/repository[:tag][@digest]` (parseReference's inverse). */
export function formatReference(ref: Reference): string {
  return `${ref.registry}/${ref.repository}${ref.tag !== undefined ? `:${ref.tag}` : ''}${
    ref.digest !== undefined ? `@${ref.digest}` : ''
  }`;
}

/** Accepts a string or a parsed reference. */
export function toReference(ref: Reference | string): Reference {
  return typeof ref === 'string' ? parseReference(ref) : ref;
}

/** The same repository pinned to `digest` (tag dropped), e.g. for a manifest picked from an index. */
export function withDigest(ref: Reference, digest: string): Reference {
  return { registry: ref.registry, repository: ref.repository, digest };
}

/** The host[:port] that serves the registry API for `registry` (Docker Hub's differs from its name). */
export function apiHost(registry: string): string {
  return registry === DOCKER_HUB ? DOCKER_HUB_API : registry;
}

/** The host part of `host[:port]` / `[v6]:port`, lower-cased, brackets removed. */
export function hostname(registry: string): string {
  if (registry.startsWith('[')) return registry.slice(1, registry.indexOf(']')).toLowerCase();
  const colon = registry.lastIndexOf(':');
  return (colon >= 0 ? registry.slice(0, colon) : registry).toLowerCase();
}

/** True for localhost, 127.0.0.0/8 and ::1: hosts the client talks plain HTTP to by default. */
export function isLoopback(registry: string): boolean {
  const h = hostname(registry);
  if (h === 'localhost' || h === '::1') return true;
  return /^127\.\d{1,3}\.\d{1,3}\.\d{1,3}$/.test(h);
}

/** Parses a listen address `host:port`, `[v6]:port` or `:port` (all interfaces); undefined if malformed. */
export function parseListen(s: string): { host: string; port: number } | undefined {
  const m = /^(?:\[([0-9a-fA-F:.]+)\]|([^:[\]]*)):([0-9]{1,5})$/.exec(s);
  if (m === null) return undefined;
  const port = Number(m[3]);
  if (port > 65535) return undefined;
  return { host: m[1] ?? (m[2] === '' ? '0.0.0.0' : m[2]!), port };
}
