/**
 * `starlight image inspect REF` and `starlight image toc REF [--layer N] [--merged] [--json]`: read
 * an image straight from its registry (no proxy): platform, digests, layer sizes, and the file table
 * of one layer or of the merged chain, as a `tar -tv`-like listing or JSON.
 */
import { parseArgs } from 'node:util';
import { StarlightError, withContext } from '../errors.js';
import { buildLayerToc } from '../layers/indexer.js';
import { formatTocLine } from '../layers/listing.js';
import { mergeLayers } from '../layers/merge.js';
import type { LayerToc, TocEntry } from '../layers/toc.js';
import { RegistryClient, type ResolvedImage } from '../oci/client.js';
import { formatPlatform, parsePlatform } from '../oci/platform.js';
import { formatReference, parseReference } from '../oci/reference.js';
import { createProgress, formatBytes } from './progress.js';

const USAGE = `usage: starlight image inspect REF [--platform os/arch] [--insecure HOST]… [--json]
       starlight image toc REF [--layer N] [--merged] [--platform os/arch] [--insecure HOST]… [--json]
--layer N lists layer N (0 = lowest); --merged (default) lists the flattened chain.`;

function usageError(msg: string): StarlightError {
  return new StarlightError('SL_ERR_INVALID_ARGUMENT', `${msg}\n${USAGE}`);
}

function parse(argv: string[]) {
  return parseArgs({
    args: argv,
    allowPositionals: true,
    options: {
      platform: { type: 'string' },
      insecure: { type: 'string', multiple: true },
      json: { type: 'boolean' },
      layer: { type: 'string' },
      merged: { type: 'boolean' },
      help: { type: 'boolean', short: 'h' },
    },
  });
}

async function resolveImage(ref: string, platform: string | undefined, insecure: string[] | undefined): Promise<{ client: RegistryClient; img: ResolvedImage }> {
  const client = new RegistryClient({ insecureHosts: insecure ?? [] });
  const img = await client.resolve(parseReference(ref), platform ? parsePlatform(platform) : undefined);
  return { client, img };
}

/** Layer sizes and the uncompressed size when the TOC is known. */
function inspectText(img: ResolvedImage): string {
  const lines = [
    `reference: ${formatReference(img.ref)}`,
    `platform:  ${formatPlatform(img.platform)}`,
    ...(img.indexDigest ? [`index:     ${img.indexDigest}`] : []),
    `manifest:  ${img.manifestDigest} (${img.manifestMediaType})`,
    `config:    ${img.manifest.config.digest}`,
    `layers:    ${img.manifest.layers.length}, ${formatBytes(img.manifest.layers.reduce((a, l) => a + l.size, 0))} compressed`,
  ];
  img.manifest.layers.forEach((l, i) => {
    lines.push(`  ${i}  ${l.digest}  ${formatBytes(l.size).padStart(10)}  ${l.mediaType}`);
    lines.push(`     diffID ${img.config.rootfs.diff_ids[i] ?? '?'}`);
  });
  return lines.join('\n');
}

async function layerTocs(client: RegistryClient, img: ResolvedImage, only?: number): Promise<LayerToc[]> {
  const progress = createProgress();
  const tocs: LayerToc[] = [];
  const layers = img.manifest.layers;
  for (let i = 0; i < layers.length; i++) {
    if (only !== undefined && i !== only) continue;
    const desc = layers[i]!;
    progress.update(`indexing layer ${i + 1}/${layers.length} (${formatBytes(desc.size)})`);
    try {
      const blob = await client.fetchBlob(img.ref, desc);
      tocs.push(await buildLayerToc(blob, { mediaType: desc.mediaType, expectedDiffID: img.config.rootfs.diff_ids[i], layerName: desc.digest }));
    } catch (err) {
      // Name the image: the indexer only knows the layer digest.
      throw withContext(err, `layer ${i} of image ${formatReference(img.ref)}`, { image: formatReference(img.ref), layer: desc.digest });
    }
  }
  progress.done();
  return tocs;
}

/** JSON form of an entry: xattr values base64, everything else as in the TOC. */
function entryJson(e: TocEntry): Record<string, unknown> {
  const out: Record<string, unknown> = { ...e };
  if (e.xattrs) out.xattrs = Object.fromEntries(Object.entries(e.xattrs).map(([k, v]) => [k, Buffer.from(v).toString('base64')]));
  return out;
}

export async function runImageCommand(argv: string[]): Promise<number> {
  const [sub, ...rest] = argv;
  const { values, positionals } = parse(rest);
  if (values.help || sub === undefined || sub === '--help' || sub === '-h') {
    process.stdout.write(USAGE + '\n');
    return sub === undefined ? 64 : 0;
  }
  if (sub !== 'inspect' && sub !== 'toc') throw usageError(`unknown image subcommand '${sub}'`);
  if (positionals.length !== 1) throw usageError('expected exactly one REF');
  const { client, img } = await resolveImage(positionals[0]!, values.platform, values.insecure);
  if (sub === 'inspect') {
    if (values.json) {
      process.stdout.write(
        JSON.stringify(
          {
            reference: formatReference(img.ref),
            platform: formatPlatform(img.platform),
            indexDigest: img.indexDigest,
            manifestDigest: img.manifestDigest,
            mediaType: img.manifestMediaType,
            config: img.manifest.config,
            layers: img.manifest.layers.map((l, i) => ({ ...l, diffID: img.config.rootfs.diff_ids[i] })),
          },
          null,
          2,
        ) + '\n',
      );
    } else process.stdout.write(inspectText(img) + '\n');
    return 0;
  }
  let only: number | undefined;
  if (values.layer !== undefined) {
    only = Number(values.layer);
    if (!Number.isInteger(only) || only < 0 || only >= img.manifest.layers.length) {
      throw usageError(`--layer must be 0..${img.manifest.layers.length - 1}, got '${values.layer}'`);
    }
    if (values.merged) throw usageError('--layer and --merged exclude each other');
  }
  const tocs = await layerTocs(client, img, only);
  const entries = only !== undefined ? tocs[0]!.entries : mergeLayers(tocs).entries;
  if (values.json) {
    process.stdout.write(JSON.stringify(entries.map(entryJson)) + '\n');
  } else {
    const out = entries.map(formatTocLine).join('\n');
    process.stdout.write(out + (out ? '\n' : ''));
  }
  return 0;
}
