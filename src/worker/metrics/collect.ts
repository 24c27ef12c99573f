/**
 * The worker daemon's metric families (issue 16), built at scrape time from what the daemon already
 * tracks: per image bytes streamed/remaining (image service status), on-demand fetches and read
 * deadlines (content tracker), blocked reads and their waits, EIO by cause and FUSE operations (view
 * manager), views and mounts. Names are documented in docs/lazy-pull.md ("Metrics").
 *
 * Not here: counting (the components), the text format (exposition.ts), serving (server.ts).
 */
import type { ImageStatus } from '../images/service.js';
import type { ViewCounters } from '../fs/view.js';
import type { Family } from '../../prometheus.js';

export interface WorkerMetricSources {
  images: ImageStatus[];
  tracker?: { onDemandFetches: number; deadlineExpired: number };
  views?: ViewCounters;
  /** Remote views built since start (status().views). */
  viewsServed: number;
  /** Mounts under the daemon's root (FUSE views and container overlays). */
  mounts: number;
}

/** Native FUSE counters exported as starlight_fuse_ops_total{op=…}. */
const FUSE_OPS: Record<string, string> = { lookups: 'lookup', getattrs: 'getattr', readdirs: 'readdir', opens: 'open', reads: 'read', interrupts: 'interrupt' };
/** Native failure counters exported as starlight_eio_total{cause=…}. */
const NATIVE_EIO: Record<string, string> = {
  failedUnmount: 'unmount',
  failedContentOpen: 'content-open',
  failedContentRead: 'content-read',
  failedPassthroughOpen: 'passthrough-open',
  failedBackingOpen: 'backing-open',
  failedServe: 'serve',
};

export function workerFamilies(s: WorkerMetricSources): Family[] {
  const img = (i: ImageStatus) => ({ image: i.ref, manifest: i.manifestDigest });
  const native = s.views?.native ?? {};
  const families: Family[] = [
    { name: 'starlight_image_bytes', type: 'gauge', help: 'Uncompressed content bytes of the image (all its files)', samples: s.images.map((i) => ({ labels: img(i), value: i.bytes })) },
    { name: 'starlight_image_bytes_present', type: 'gauge', help: 'Content bytes of the image already on this node', samples: s.images.map((i) => ({ labels: img(i), value: i.bytesPresent })) },
    { name: 'starlight_image_bytes_remaining', type: 'gauge', help: 'Content bytes of the image still to stream', samples: s.images.map((i) => ({ labels: img(i), value: Math.max(0, i.bytes - i.bytesPresent) })) },
    { name: 'starlight_image_wire_bytes', type: 'gauge', help: 'Bytes received on the wire for the image by the current stream (encoded)', samples: s.images.map((i) => ({ labels: img(i), value: i.wireBytes })) },
    { name: 'starlight_image_streaming', type: 'gauge', help: '1 while the image is streaming', samples: s.images.map((i) => ({ labels: img(i), value: i.streaming ? 1 : 0 })) },
    { name: 'starlight_image_complete', type: 'gauge', help: '1 once every file of the image is on this node', samples: s.images.map((i) => ({ labels: img(i), value: i.complete ? 1 : 0 })) },
    { name: 'starlight_ondemand_fetches_total', type: 'counter', help: 'Single items fetched out of stream order because a read needed them', samples: [{ value: s.tracker?.onDemandFetches ?? 0 }] },
    { name: 'starlight_blocked_reads_total', type: 'counter', help: 'FUSE reads parked until their content arrived', samples: [{ value: native.parked ?? 0 }] },
    { name: 'starlight_blocked_read_wait_seconds', type: 'histogram', help: 'How long parked reads waited for content', samples: s.views?.blockedReadSeconds.samples() ?? [] },
    {
      name: 'starlight_eio_total',
      type: 'counter',
      help: 'Reads and opens failed with an error, by cause (parked reads: the error code; native: the failing step)',
      samples: [
        ...Object.entries(NATIVE_EIO).map(([k, cause]) => ({ labels: { cause }, value: native[k] ?? 0 })),
        ...[...(s.views?.blockedReadFailures ?? new Map<string, number>())].map(([cause, value]) => ({ labels: { cause }, value })),
      ],
    },
    { name: 'starlight_read_deadline_expired_total', type: 'counter', help: 'Reads failed because content did not arrive within --read-deadline', samples: [{ value: s.tracker?.deadlineExpired ?? 0 }] },
    { name: 'starlight_fuse_ops_total', type: 'counter', help: 'FUSE operations served, by operation', samples: Object.entries(FUSE_OPS).map(([k, op]) => ({ labels: { op }, value: native[k] ?? 0 })) },
    { name: 'starlight_fuse_read_bytes_total', type: 'counter', help: 'Bytes read through FUSE views (passthrough reads excluded)', samples: [{ value: native.readBytes ?? 0 }] },
    { name: 'starlight_views_mounted', type: 'gauge', help: 'Lazy FUSE views mounted now', samples: [{ value: s.views?.mounted ?? 0 }] },
    { name: 'starlight_views_built_total', type: 'counter', help: 'Lazy views built since the daemon started', samples: [{ value: s.viewsServed }] },
    { name: 'starlight_mounts', type: 'gauge', help: 'Mounts under the daemon root (views and container snapshots)', samples: [{ value: s.mounts }] },
  ];
  return families;
}
