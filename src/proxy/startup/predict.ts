/**
 * Startup prediction from the image itself (PURE: data in, order out; no I/O, no clock): which files a
 * container of this image reads first, in the order it reads them, without any trace of it.
 *
 * Contract: `predictStartup(tree, config, facts)` walks what the container executes — the config's
 * Entrypoint/Cmd (WorkingDir, Env PATH / LD_LIBRARY_PATH / LANG) resolved through PATH and the merged
 * tree's symlinks; for scripts the `#!` interpreter (also `/usr/bin/env NAME`), then the files and
 * commands the script names (absolute paths; for shell scripts bare words resolved through PATH); for
 * ELF executables the PT_INTERP loader, /etc/ld.so.cache and the DT_NEEDED closure searched as glibc's
 * ld.so does (RPATH unless RUNPATH, LD_LIBRARY_PATH, RUNPATH, /etc/ld.so.conf and its includes, the
 * multiarch and standard lib dirs; $ORIGIN expanded); then the files every process start reads
 * (nsswitch.conf, passwd, group, hosts, localtime, locale files of LANG… that exist), and the small
 * files the executable and its libraries name by compiled-in absolute path (ElfInfo.paths: login.defs,
 * gconv-modules.cache). These are the CORE files. After them come REST files: the directories those
 * objects name by path (their plugin and data dirs: /etc/pam.d, …/security, a share dir; shared
 * objects taken there are plugins whose libraries follow them), contents of directories named as
 * arguments, the "homes" of the executed programs (usr/lib/python3.11 for python3.11, the prefix of
 * …/bin/postgres), and the other small files of the directories of core files; each group picks its
 * files within its budget, then the rest is one order: compiled caches (__pycache__) first, then
 * shallow before deep, then small before large.
 *
 * File contents are known only through `facts(digest)` (ELF info or a text head). A file whose facts
 * are missing is listed in `need`: the caller reads those and calls again with more facts; the walk
 * is deterministic, so the answer with all needed facts is the fixed point. Each call is bounded
 * (MAX_EXEC_DEPTH, MAX_LIBS, MAX_PREDICTED) and never throws on image content: a missing interpreter,
 * a dangling symlink or a library not found simply ranks nothing for it.
 *
 * Not here: reading bytes (src/proxy/startup-service.ts), ELF and script parsing (elf.ts, script.ts),
 * merging with traces (priority-service.ts).
 */
import { baseName, comparePaths, parentPath } from '../../layers/paths.js';
import type { TocEntry } from '../../layers/toc.js';
import type { ImageConfig } from '../../oci/types.js';
import type { OrderSignal } from '../../protocol/traces.js';
import { DEFAULT_PATH, SHLIB_RE, resolvePath } from '../planner.js';
import type { ElfInfo } from './elf.js';
import { isShell, parseShebang, scriptWords } from './script.js';

/** What the analysis knows of one content (by digest). */
export type FileFacts =
  | { kind: 'elf'; elf: ElfInfo }
  /** Not ELF; `head` = the first SCRIPT_HEAD_BYTES as latin1 (binary files: kind 'other'). */
  | { kind: 'text'; head: string }
  /** Binary, not ELF. */
  | { kind: 'other' }
  /** Could not be read (evicted from the cache, unparseable ELF): assumed usable, not followed. */
  | { kind: 'unknown' };

/** Why a file is where it is (shown by `starlight trace show`; the list is in src/protocol/traces.ts). */
export type StartupSignal = Exclude<OrderSignal, 'trace' | 'prior-trace'>;

export interface PredictedFile {
  path: string;
  digest: string;
  size: number;
  signal: StartupSignal;
  /** The file that led here (the script naming it, the object needing it), if any. */
  via?: string;
  /** Core (exec chain and process-start files) or rest (directory-based guesses). */
  core: boolean;
}

export interface Prediction {
  files: PredictedFile[];
  /** Digests whose facts the walk needed and did not have (read them, call again). */
  need: string[];
}

/** Nested executions followed (script → interpreter → script it runs …). */
const MAX_EXEC_DEPTH = 8;
/** Shared libraries resolved per prediction. */
const MAX_LIBS = 1024;
/** Files predicted in all (core + rest). */
const MAX_PREDICTED = 20_000;
/** REST: bytes taken from one program home (small files first). */
const HOME_BUDGET_BYTES = 32 * 1024 * 1024;
/** REST: bytes taken from one directory named as an argument or the working directory. */
const DIR_ARG_BUDGET_BYTES = 64 * 1024 * 1024;
/** REST: bytes taken from the directory of a core file, and the largest file taken there. */
const NEIGHBOUR_BUDGET_BYTES = 4 * 1024 * 1024;
const NEIGHBOUR_MAX_FILE_BYTES = 256 * 1024;
/** ELF path strings: a regular file named is ranked (core) up to this size. */
const ELF_PATH_MAX_FILE_BYTES = 1024 * 1024;
/** REST: bytes taken from one directory an ELF names by a path string, and from all of them. */
const ELF_DIR_BUDGET_BYTES = 2 * 1024 * 1024;
const ELF_DIRS_BUDGET_BYTES = 16 * 1024 * 1024;
/** A `$VAR` path component matches at most this many combinations. */
const MAX_WILDCARD = 8;
/** ld.so.conf include files followed. */
const MAX_LDCONF_FILES = 64;

/** Multiarch tuple of an ELF e_machine (Debian/Ubuntu library directory names). */
const MULTIARCH: Readonly<Record<number, string>> = {
  62: 'x86_64-linux-gnu',
  183: 'aarch64-linux-gnu',
  3: 'i386-linux-gnu',
  40: 'arm-linux-gnueabihf',
  21: 'powerpc64le-linux-gnu',
  22: 's390x-linux-gnu',
  243: 'riscv64-linux-gnu',
};

/** Files read by (almost) every process start when they exist, in a typical order. */
const PROCESS_START_FILES = [
  'etc/nsswitch.conf',
  'etc/passwd',
  'etc/group',
  'etc/host.conf',
  'etc/hosts',
  'etc/resolv.conf',
  'etc/gai.conf',
  'etc/localtime',
  'etc/timezone',
];

/** An image's merged tree prepared for lookups (build once per image; read-only afterwards). */
export class StartupTree {
  readonly byPath = new Map<string, TocEntry>();
  private readonly kids = new Map<string, TocEntry[]>();

  constructor(entries: readonly TocEntry[]) {
    for (const e of entries) {
      this.byPath.set(e.path, e);
      if (e.path === '') continue;
      const p = parentPath(e.path);
      let l = this.kids.get(p);
      if (l === undefined) this.kids.set(p, (l = []));
      l.push(e);
    }
  }

  children(dir: string): readonly TocEntry[] {
    return this.kids.get(dir) ?? [];
  }

  /**
   * Regular files (and hardlinks) with content below `dir`, with their depth below it; with
   * `followFileLinks`, also the targets of symlinks there that resolve to such files (e.g.
   * usr/lib/ssl/openssl.cnf → etc/ssl/openssl.cnf).
   */
  filesBelow(dir: string, limit: number, followFileLinks = false): { e: TocEntry; depth: number }[] {
    const out: { e: TocEntry; depth: number }[] = [];
    const walk = (d: string, depth: number): void => {
      for (const c of this.children(d)) {
        if (out.length >= limit) return;
        if (c.type === 'dir') walk(c.path, depth + 1);
        else if (hasContent(c)) out.push({ e: c, depth });
        else if (followFileLinks && c.type === 'symlink') {
          const r = resolvePath(c.path, this.byPath);
          const t = r === undefined ? undefined : this.byPath.get(r);
          if (t !== undefined && hasContent(t)) out.push({ e: t, depth });
        }
      }
    };
    walk(dir, 1);
    return out;
  }
}

function hasContent(e: TocEntry): boolean {
  return (e.type === 'reg' || e.type === 'hardlink') && e.digest !== undefined && e.size > 0;
}

const isExecutable = (e: TocEntry): boolean => (e.mode & 0o111) !== 0;
const trimSlash = (p: string): string => p.split('/').filter((s) => s !== '' && s !== '.').join('/');

function envOf(config: ImageConfig | undefined, name: string): string | undefined {
  const v = config?.config?.Env?.find((x) => x.startsWith(`${name}=`));
  return v?.slice(name.length + 1);
}

/**
 * The rest's chosen files in their final order, kept by Predictor across rounds: the choice reads the
 * tree and the core only (no facts once `sharedDirs` is known), so it is made once per fixed point.
 */
interface RestMemo {
  order?: PredictedFile[];
}

/** The walk's state for one call (see the file header). */
class Walk {
  readonly files: PredictedFile[] = [];
  readonly need = new Set<string>();
  private readonly added = new Set<string>();
  private readonly execd = new Set<string>();
  private readonly scanned = new Set<string>();
  private readonly libs = new Set<string>();
  private readonly dirArgs: string[] = [];
  private readonly homes: string[] = [];
  /** Directories named by path strings of executed ELF objects, with the object naming each. */
  private readonly elfDirs = new Map<string, string>();
  private readonly elfPathsDone = new Set<string>();
  private ldCacheDone = false;
  private processStartDone = false;
  private ldConf: string[] | undefined;
  private readonly pathDirs: string[];
  private readonly ldLibraryPath: string[];
  private readonly cwd: string;

  constructor(
    private readonly tree: StartupTree,
    private readonly config: ImageConfig | undefined,
    private readonly facts: (digest: string) => FileFacts | undefined,
  ) {
    this.pathDirs = (envOf(config, 'PATH') ?? DEFAULT_PATH).split(':').filter((d) => d !== '');
    this.ldLibraryPath = (envOf(config, 'LD_LIBRARY_PATH') ?? '').split(':').filter((d) => d.startsWith('/'));
    this.cwd = trimSlash(config?.config?.WorkingDir ?? '');
  }

  /**
   * A walk in the state this one is in, reading `facts` from now on: what rest() changes (files,
   * added, libs, need) is copied; what it only reads (dirs, homes, ld.so.conf) is shared.
   */
  fork(facts: (digest: string) => FileFacts | undefined): Walk {
    const w = new Walk(this.tree, this.config, facts);
    w.files.push(...this.files);
    for (const d of this.need) w.need.add(d);
    for (const p of this.added) w.added.add(p);
    for (const p of this.libs) w.libs.add(p);
    w.dirArgs.push(...this.dirArgs);
    w.homes.push(...this.homes);
    for (const [d, via] of this.elfDirs) w.elfDirs.set(d, via);
    w.ldConf = this.ldConf;
    w.shared = this.shared;
    return w;
  }

  private entry(path: string): TocEntry | undefined {
    return this.tree.byPath.get(path);
  }

  add(path: string, signal: StartupSignal, via: string | undefined, core: boolean): void {
    const e = this.entry(path);
    if (e === undefined || !hasContent(e) || this.added.has(path) || this.files.length >= MAX_PREDICTED) return;
    this.added.add(path);
    this.files.push({ path, digest: e.digest!, size: e.size, signal, ...(via !== undefined ? { via } : {}), core });
  }

  private factsOf(path: string): FileFacts | undefined {
    const d = this.entry(path)?.digest;
    if (d === undefined) return undefined;
    const f = this.facts(d);
    if (f === undefined) this.need.add(d);
    return f;
  }

  /** Absolute or cwd-relative path → resolved regular-file paths (several when a component is `$VAR`). */
  resolveFiles(p: string, base = this.cwd): string[] {
    return this.expand(p, base).filter((r) => {
      const e = this.entry(r);
      return e !== undefined && hasContent(e);
    });
  }

  /** Resolves `p` (symlinks of the tree; `$VAR` components match any entry, bounded) to existing paths. */
  private expand(p: string, base: string): string[] {
    const full = p.startsWith('/') ? p : `${base}/${p}`;
    let cands = [''];
    for (const comp of full.split('/').filter((s) => s !== '' && s !== '.')) {
      if (!comp.includes('$')) {
        cands = cands.map((c) => (c === '' ? comp : `${c}/${comp}`));
        continue;
      }
      const next: string[] = [];
      for (const c of cands) {
        const dir = resolvePath(c, this.tree.byPath);
        if (dir === undefined) continue;
        for (const k of this.tree.children(dir)) if (next.length < MAX_WILDCARD) next.push(`${c === '' ? '' : c + '/'}${baseName(k.path)}`);
      }
      cands = next;
    }
    const out: string[] = [];
    for (const c of cands) {
      const r = resolvePath(c, this.tree.byPath);
      if (r !== undefined && !out.includes(r)) out.push(r);
    }
    return out;
  }

  /** A command word → the executable it runs (PATH search when it has no '/'), if any. */
  resolveCommand(word: string): string | undefined {
    if (word.includes('/')) return this.resolveFiles(word).find((p) => isExecutable(this.entry(p)!));
    for (const dir of this.pathDirs) {
      const r = resolvePath(`${dir}/${word}`, this.tree.byPath);
      const e = r === undefined ? undefined : this.entry(r);
      if (e !== undefined && hasContent(e) && isExecutable(e)) return r;
    }
    return undefined;
  }

  /** The container's first process: argv from Entrypoint + Cmd. */
  start(): void {
    const c = this.config?.config;
    const ep = c?.Entrypoint ?? [];
    const argv = ep.length > 0 ? [...ep, ...(c?.Cmd ?? [])] : [...(c?.Cmd ?? [])];
    const argv0 = argv[0];
    if (argv0 !== undefined && argv0 !== '') {
      const exe = this.resolveCommand(argv0);
      if (exe !== undefined) this.exec(exe, 'entrypoint', undefined, 0);
    }
    // Arguments naming files or directories (a script for an interpreter, a config, a data dir).
    for (const a of argv.slice(1)) if (a.startsWith('/') || a.includes('/')) this.argument(a, undefined, 0);
    if (this.cwd !== '' && this.entry(this.cwd)?.type === 'dir') this.dirArgs.push(this.cwd);
  }

  /** `path` is executed (by the runtime, a shebang or a script). */
  exec(path: string, signal: StartupSignal, via: string | undefined, depth: number): void {
    if (depth > MAX_EXEC_DEPTH || this.execd.has(path)) return;
    this.execd.add(path);
    this.add(path, signal, via, true);
    const f = this.factsOf(path);
    if (f === undefined) return;
    if (f.kind === 'elf') {
      const closure = this.elf(path, f.elf);
      this.homesOf(path);
      this.processStart();
      for (const o of closure) this.elfPaths(o.path, o.info);
      return;
    }
    if (f.kind !== 'text') return;
    const sb = parseShebang(Buffer.from(f.head, 'latin1'));
    let shell = true; // no #!: execvp runs it with /bin/sh
    if (sb !== undefined) {
      const interp = this.resolveFiles(sb.interpreter, '')[0];
      if (interp !== undefined) {
        this.exec(interp, 'shebang', path, depth + 1);
        let base = baseName(interp);
        if (base === 'env' && sb.arg !== undefined) {
          const cmd = sb.arg.split(/\s+/).find((w) => w !== '' && !w.startsWith('-') && !w.includes('='));
          const target = cmd === undefined ? undefined : this.resolveCommand(cmd);
          if (target !== undefined) {
            this.exec(target, 'shebang', path, depth + 1);
            base = baseName(cmd!);
          }
        }
        shell = isShell(base);
      } else {
        shell = isShell(baseName(sb.interpreter));
      }
    }
    this.scan(path, f.head, shell, depth);
  }

  /** The files and commands a script names (see scriptWords). */
  private scan(path: string, text: string, shell: boolean, depth: number): void {
    if (this.scanned.has(path)) return;
    this.scanned.add(path);
    for (const w of scriptWords(text, shell)) {
      if (w.startsWith('/')) this.argument(w, path, depth);
      else {
        const exe = this.resolveCommand(w);
        if (exe !== undefined) this.exec(exe, 'script-command', path, depth + 1);
      }
    }
  }

  /** A path named as an argument: an executable runs, a file is read (and scanned), a dir is walked later. */
  private argument(p: string, via: string | undefined, depth: number): void {
    for (const r of this.expand(p, this.cwd)) {
      const e = this.entry(r)!;
      if (e.type === 'dir') {
        if (r !== '' && !this.dirArgs.includes(r)) this.dirArgs.push(r);
      } else if (hasContent(e)) {
        if (isExecutable(e) && via !== undefined) this.exec(r, 'script-command', via, depth + 1);
        else {
          this.add(r, 'argument', via, true);
          const f = this.factsOf(r);
          if (f?.kind === 'text' && depth < MAX_EXEC_DEPTH) this.scan(r, f.head, false, depth + 1);
        }
      }
    }
  }

  /**
   * An executed ELF: its loader, the loader's cache, the DT_NEEDED closure (breadth first, as ld.so).
   * Returns the objects of the closure with their facts (the executable first).
   */
  private elf(exe: string, info: ElfInfo): { path: string; info: ElfInfo }[] {
    if (info.interp !== undefined) {
      const ld = this.resolveFiles(info.interp, '')[0];
      if (ld !== undefined) this.add(ld, 'interp', exe, true);
      if (!this.ldCacheDone) {
        this.ldCacheDone = true;
        this.add('etc/ld.so.preload', 'ld-cache', undefined, true);
        this.add('etc/ld.so.cache', 'ld-cache', undefined, true);
      }
    }
    const closure: { path: string; info: ElfInfo }[] = [{ path: exe, info }];
    for (let k = 0; k < closure.length; k++) {
      const obj = closure[k]!;
      for (const name of obj.info.needed) {
        if (this.libs.size >= MAX_LIBS) return closure;
        const lib = this.findLibrary(name, obj.path, obj.info, info);
        if (lib === undefined || this.libs.has(lib)) continue;
        this.libs.add(lib);
        this.add(lib, 'needed-lib', obj.path, true);
        const f = this.factsOf(lib);
        if (f?.kind === 'elf') closure.push({ path: lib, info: f.elf });
      }
    }
    return closure;
  }

  /**
   * What an ELF object names by compiled-in absolute path (ElfInfo.paths): an existing small regular
   * file is read at startup more often than not (config files, caches such as gconv-modules.cache:
   * core, 'elf-path'); a directory is where it loads plugins or data from (its PAM modules and
   * configs, a share dir): REST, 'elf-dir', unless it is a broad or shared one (the library and PATH
   * directories, top-level dirs and their direct children such as usr/share or var/lib).
   */
  private elfPaths(obj: string, info: ElfInfo): void {
    if (this.elfPathsDone.has(obj)) return;
    this.elfPathsDone.add(obj);
    for (const s of info.paths ?? []) {
      const r = resolvePath(s, this.tree.byPath);
      const e = r === undefined ? undefined : this.entry(r);
      if (this.isNamedFile(e)) this.add(r!, 'elf-path', obj, true);
      else if (e?.type === 'dir' && !this.elfDirs.has(r!) && !this.broadDir(r!)) this.elfDirs.set(r!, obj);
    }
  }

  /** A file an ELF names by path that is worth ranking (has content, not large). */
  private isNamedFile(e: TocEntry | undefined): boolean {
    return e !== undefined && hasContent(e) && e.size <= ELF_PATH_MAX_FILE_BYTES;
  }

  /** Library and PATH directories, and directories too close to the root to say anything (see elfPaths). */
  private broadDir(dir: string): boolean {
    const parent = parentPath(dir);
    return dir === '' || ['', 'usr', 'usr/local', 'var'].includes(parent) || this.sharedDirs().has(dir);
  }

  private shared: Set<string> | undefined;
  /** The PATH and library directories (files there belong to many programs). */
  private sharedDirs(): Set<string> {
    if (this.shared !== undefined) return this.shared;
    const shared = new Set([...this.pathDirs, ...this.ldConfDirs(), '/lib', '/usr/lib', '/lib64', '/usr/lib64'].map(trimSlash));
    for (const ma of Object.values(MULTIARCH)) shared.add(`lib/${ma}`).add(`usr/lib/${ma}`);
    return (this.shared = shared);
  }

  /** glibc's search for DT_NEEDED `name` of object `objPath` (see the file header). */
  findLibrary(name: string, objPath: string, obj: ElfInfo, exe: ElfInfo): string | undefined {
    const origin = parentPath(objPath);
    if (name.includes('/')) return this.resolveFiles(name, origin)[0];
    const expandDir = (d: string): string | undefined => {
      const x = d.replace(/\$(ORIGIN|\{ORIGIN\})/g, `/${origin}`);
      return x.includes('$') || !x.startsWith('/') ? undefined : x;
    };
    const dirs: string[] = [];
    if (obj.runpath.length === 0) {
      dirs.push(...obj.rpath);
      if (exe !== obj && exe.runpath.length === 0) dirs.push(...exe.rpath);
    }
    dirs.push(...this.ldLibraryPath, ...obj.runpath, ...this.ldConfDirs());
    const ma = MULTIARCH[obj.machine];
    if (ma !== undefined) dirs.push(`/lib/${ma}`, `/usr/lib/${ma}`);
    if (obj.bits === 64) dirs.push('/lib64', '/usr/lib64');
    dirs.push('/lib', '/usr/lib');
    for (const raw of dirs) {
      const d = expandDir(raw);
      if (d === undefined) continue;
      const r = resolvePath(`${d}/${name}`, this.tree.byPath);
      const e = r === undefined ? undefined : this.entry(r);
      if (e === undefined || !hasContent(e)) continue;
      const f = this.factsOf(r!);
      // ld.so skips a library of the wrong class or machine and keeps searching.
      if (f?.kind === 'elf' && (f.elf.bits !== obj.bits || f.elf.machine !== obj.machine)) continue;
      if (f?.kind === 'text' || f?.kind === 'other') continue;
      return r;
    }
    return undefined;
  }

  /** Directories of /etc/ld.so.conf and its `include` globs (what ldconfig put into ld.so.cache). */
  private ldConfDirs(): string[] {
    if (this.ldConf !== undefined) return this.ldConf;
    const dirs: string[] = [];
    const seen = new Set<string>();
    const read = (file: string): void => {
      const r = resolvePath(file, this.tree.byPath);
      if (r === undefined || seen.has(r) || seen.size >= MAX_LDCONF_FILES) return;
      seen.add(r);
      const f = this.factsOf(r);
      if (f?.kind !== 'text') return;
      for (const raw of f.head.split('\n')) {
        const line = raw.replace(/#.*/, '').trim();
        if (line === '') continue;
        const inc = /^include\s+(\S+)/.exec(line);
        if (inc !== null) {
          for (const g of this.glob(inc[1]!.startsWith('/') ? inc[1]! : `/etc/${inc[1]!}`)) read(g);
        } else if (line.startsWith('/')) dirs.push(line.split(/[\s=]/)[0]!);
      }
    };
    read('etc/ld.so.conf');
    this.ldConf = dirs;
    return dirs;
  }

  /** Paths matching `pattern` whose last component may hold `*` (ld.so.conf includes), sorted. */
  private glob(pattern: string): string[] {
    const dir = resolvePath(parentPath(trimSlash(pattern)), this.tree.byPath);
    if (dir === undefined) return [];
    const re = new RegExp('^' + baseName(pattern).replace(/[.+^${}()|[\]\\?]/g, '\\$&').replace(/\*/g, '.*') + '$');
    return this.tree
      .children(dir)
      .filter((k) => re.test(baseName(k.path)))
      .map((k) => k.path)
      .sort();
  }

  /** Files every dynamic process start may read, once, after the first executable's libraries. */
  private processStart(): void {
    if (this.processStartDone) return;
    this.processStartDone = true;
    for (const f of PROCESS_START_FILES) {
      const r = resolvePath(f, this.tree.byPath);
      if (r !== undefined) this.add(r, 'process-start', undefined, true);
    }
    const lang = envOf(this.config, 'LC_ALL') ?? envOf(this.config, 'LANG');
    if (lang === undefined || lang === '' || lang === 'C' || lang === 'POSIX') return;
    const m = /^([^.@]+)(?:\.([^@]+))?/.exec(lang);
    const name = m?.[1] ?? lang;
    const codeset = (m?.[2] ?? '').toLowerCase().replace(/[^a-z0-9]/g, '');
    // glibc: locale-archive first, the alias file (read when the name is not in the archive), then
    // per-locale dirs (C.UTF-8 ships as usr/lib/locale/C.utf8).
    this.add('usr/lib/locale/locale-archive', 'locale', undefined, true);
    const alias = resolvePath('usr/share/locale/locale.alias', this.tree.byPath);
    if (alias !== undefined) this.add(alias, 'locale', undefined, true);
    for (const dir of [`usr/lib/locale/${name}.${codeset}`, `usr/lib/locale/${lang}`]) {
      for (const { e } of this.tree.filesBelow(dir, 64)) this.add(e.path, 'locale', undefined, true);
    }
  }

  /** Program homes of an executed ELF (rest): usr/lib/NAME, usr/share/NAME, the prefix of …/bin/NAME. */
  private homesOf(exe: string): void {
    const base = baseName(exe);
    const stem = base.replace(/[0-9.]+$/, '');
    const cands = [`usr/lib/${base}`, `usr/local/lib/${base}`, `usr/share/${base}`];
    if (stem !== base && stem !== '') cands.push(`usr/lib/${stem}`, `usr/share/${stem}`);
    const dir = parentPath(exe);
    if (/^(bin|sbin)$/.test(baseName(dir))) {
      const prefix = parentPath(dir);
      if (!['', 'usr', 'usr/local'].includes(prefix)) cands.push(prefix);
    }
    for (const c of cands) if (this.entry(c)?.type === 'dir' && !this.homes.includes(c)) this.homes.push(c);
  }

  /**
   * REST: directory arguments, program homes, neighbours of core files (see the file header). The
   * choice and its order come from `memo` when an earlier round made them (see RestMemo); plugins are
   * followed every round (their facts arrive round by round).
   */
  rest(memo: RestMemo): void {
    let order = memo.order;
    if (order === undefined) {
      const needed = this.need.size;
      order = this.chooseRest();
      if (this.need.size === needed) memo.order = order;
    } else {
      for (const f of order) this.added.add(f.path);
    }
    for (const f of order) {
      this.files.push(f);
      this.plugin(f);
    }
  }

  /** The rest's files in their order (see the file header); marks them added, does not list them. */
  private chooseRest(): PredictedFile[] {
    const depthOf = new Map<string, number>();
    const take = (files: { e: TocEntry; depth: number }[], budget: number, maxFile: number, signal: StartupSignal, via: string): number => {
      let taken = 0;
      for (const { e, depth } of sortRest(files)) {
        if (e.size > maxFile || this.added.has(e.path)) continue;
        if (budget < e.size) break;
        budget -= e.size;
        taken += e.size;
        depthOf.set(e.path, depth);
        this.add(e.path, signal, via, false);
      }
      return taken;
    };
    const firstRest = this.files.length;
    // Directories the executed programs name themselves (PAM modules, share dirs): small budgets.
    let elfBudget = ELF_DIRS_BUDGET_BYTES;
    for (const [d, via] of this.elfDirs) {
      if (elfBudget <= 0) break;
      elfBudget -= take(this.tree.filesBelow(d, MAX_PREDICTED, true), Math.min(ELF_DIR_BUDGET_BYTES, elfBudget), Infinity, 'elf-dir', via);
    }
    for (const d of this.dirArgs) take(this.tree.filesBelow(d, MAX_PREDICTED), DIR_ARG_BUDGET_BYTES, Infinity, 'argument-dir', d);
    for (const h of this.homes) take(this.tree.filesBelow(h, MAX_PREDICTED), HOME_BUDGET_BYTES, Infinity, 'home', h);
    const shared = this.sharedDirs();
    const dirs: string[] = [];
    const seen = new Set<string>();
    for (const f of this.files) {
      const d = parentPath(f.path);
      if (f.core && !shared.has(d) && !seen.has(d)) {
        seen.add(d);
        dirs.push(d);
      }
    }
    for (const d of dirs) {
      const files = this.tree.children(d).filter(hasContent).map((e) => ({ e, depth: 1 }));
      take(files, NEIGHBOUR_BUDGET_BYTES, NEIGHBOUR_MAX_FILE_BYTES, 'neighbour', d);
    }
    // One order over all groups: compiled caches, then shallow before deep (a data directory's top
    // files before the libraries three levels down another directory), then small before large.
    const rest = this.files.splice(firstRest);
    return sortRest(rest.map((f) => ({ f, e: this.entry(f.path)!, depth: depthOf.get(f.path) ?? 1 }))).map(({ f }) => f);
  }

  /**
   * An ELF object taken from a directory a program names (a plugin it dlopens, e.g. a PAM module): its
   * libraries and the files it names by path come right after it (rest).
   */
  private plugin(p: PredictedFile): void {
    if ((p.signal !== 'elf-dir' && p.signal !== 'home') || !SHLIB_RE.test(p.path)) return;
    const f = this.factsOf(p.path);
    if (f?.kind !== 'elf') return;
    for (const name of f.elf.needed) {
      if (this.libs.size >= MAX_LIBS) return;
      const lib = this.findLibrary(name, p.path, f.elf, f.elf);
      if (lib === undefined || this.libs.has(lib)) continue;
      this.libs.add(lib);
      this.add(lib, 'needed-lib', p.path, false);
    }
    for (const s of f.elf.paths ?? []) {
      const r = resolvePath(s, this.tree.byPath);
      if (r !== undefined && this.isNamedFile(this.entry(r))) this.add(r, 'elf-path', p.path, false);
    }
  }
}

/**
 * REST's one order (see the file header): compiled caches (Python's __pycache__: what an interpreter
 * actually reads; sources are only stat'ed) first, then shallow before deep, small before large, path.
 * The keys are computed once per file, not per comparison; the sort is stable, as before.
 */
function sortRest<T extends { e: TocEntry; depth: number }>(files: readonly T[]): T[] {
  const keyed = files.map((f) => ({ f, cache: f.e.path.includes('/__pycache__/') ? 0 : 1, depth: f.depth, size: f.e.size, path: f.e.path }));
  keyed.sort((a, b) => a.cache - b.cache || a.depth - b.depth || a.size - b.size || comparePaths(a.path, b.path));
  return keyed.map((k) => k.f);
}

/**
 * Successive walks of one image towards the fixed point (predictWith's rounds): the same answers as
 * independent predictStartup calls with the same facts, without redoing what new facts cannot change.
 * Once a walk's core (start()) needed no facts, the core is final — later rounds only add facts of
 * other contents, and a walk consults facts only through the contents it reaches — so later rounds
 * fork it instead of walking the exec chain again, and reuse the rest's choice and order (RestMemo):
 * only the plugins' libraries and paths, whose facts arrive round by round, are walked again.
 */
class Predictor {
  private core: Walk | undefined;
  private readonly memo: RestMemo = {};

  constructor(
    private readonly tree: StartupTree,
    private readonly config: ImageConfig | undefined,
  ) {}

  /** One walk with `facts`, which must agree with every earlier call's facts where those had any. */
  run(facts: (digest: string) => FileFacts | undefined): Prediction {
    let w: Walk;
    if (this.core !== undefined) w = this.core.fork(facts);
    else {
      w = new Walk(this.tree, this.config, facts);
      w.start();
      if (w.need.size > 0) return { files: w.files, need: [...w.need].sort() };
      this.core = w;
      w = w.fork(facts);
    }
    w.rest(this.memo);
    return { files: w.files, need: [...w.need].sort() };
  }
}

/** The predicted startup order of an image (see the file header). */
export function predictStartup(tree: StartupTree, config: ImageConfig | undefined, facts: (digest: string) => FileFacts | undefined): Prediction {
  return new Predictor(tree, config).run(facts);
}

/** Walk → read → walk rounds (the exec/library chain is rarely deeper than 6). */
const MAX_ROUNDS = 24;
/** Contents read per prediction. */
const MAX_FACT_READS = 2048;
/**
 * Reads in flight at once: each is a few positioned reads (or one forward decode) on the libuv pool,
 * so one at a time left the CPU idle between them on a cold image's critical path (issue 10).
 */
const FACT_READS_AT_ONCE = 8;
/** Contents read ahead of the walk per prediction (FactReads.guess), besides MAX_FACT_READS. */
const MAX_GUESSES = 256;

/**
 * The fact reads of one prediction: what a round needs first, then, while slots are free, guesses —
 * the libraries an ELF just read will need (found as the walk would find them with the facts read so
 * far), so that a library chain is read in one go instead of one round per link. A guess changes
 * no answer (facts are a function of the content), only when a fact is at hand.
 */
class FactReads {
  /** Reads started (needed or guessed), by digest. */
  private readonly started = new Map<string, Promise<FileFacts>>();
  /** Facts of the reads done so far. */
  readonly done = new Map<string, FileFacts>();
  private readonly urgent: { d: string; took: (p: Promise<FileFacts>) => void }[] = [];
  private readonly guesses: string[] = [];
  private guessed = 0;
  private active = 0;
  private stopped = false;

  constructor(
    private readonly read: (digest: string) => Promise<FileFacts>,
    private readonly onDone: (digest: string, f: FileFacts) => void,
  ) {}

  /** The facts of `d`, read now (before any guess) unless a read of it is under way. */
  need(d: string): Promise<FileFacts> {
    return (
      this.started.get(d) ??
      new Promise((took) => {
        this.urgent.push({ d, took });
        this.pump();
      })
    );
  }

  /** Reads `d` when a slot is free and no needed read waits (at most MAX_GUESSES in all). */
  guess(d: string): void {
    if (this.stopped || this.started.has(d) || this.guessed >= MAX_GUESSES) return;
    this.guessed++;
    this.guesses.push(d);
    this.pump();
  }

  /** No more guesses: queued ones are dropped (reads under way finish on their own). */
  stop(): void {
    this.stopped = true;
    this.guesses.length = 0;
  }

  private pump(): void {
    while (this.active < FACT_READS_AT_ONCE) {
      const u = this.urgent.shift();
      if (u !== undefined) u.took(this.start(u.d));
      else {
        const g = this.guesses.shift();
        if (g === undefined) return;
        // A guess nobody needs may fail unobserved; a caller that needs it gets the rejection.
        if (!this.started.has(g)) this.start(g).catch(() => undefined);
      }
    }
  }

  private start(d: string): Promise<FileFacts> {
    const had = this.started.get(d);
    if (had !== undefined) return had;
    this.active++;
    const p = this.read(d)
      .then((f) => {
        this.done.set(d, f);
        if (!this.stopped) this.onDone(d, f);
        return f;
      })
      .finally(() => {
        this.active--;
        this.pump();
      });
    this.started.set(d, p);
    return p;
  }
}

/**
 * Iterates the walk to its fixed point, asking `read` for the facts it needs (at most
 * MAX_FACT_READS contents needed, MAX_ROUNDS rounds; past those, missing facts count as 'unknown';
 * besides, at most MAX_GUESSES read ahead: FactReads). `known` supplies facts already at hand (not
 * counted). No I/O of its own: `read` does it. The answer is that of predictStartup called round
 * after round with the facts needed so far (the test suite checks it file for file) whenever that
 * stays within the bounds; a round after the core's last redoes only the rest's plugins (Predictor).
 */
export async function predictWith(
  tree: StartupTree,
  config: ImageConfig | undefined,
  read: (digest: string) => Promise<FileFacts>,
  known: (digest: string) => FileFacts | undefined = () => undefined,
): Promise<Prediction & { reads: number; rounds: number }> {
  const local = new Map<string, FileFacts>();
  let pathOf: Map<string, string> | undefined;
  const reads = new FactReads(read, (d, f) => {
    if (f.kind !== 'elf') return;
    // Where the walk will look for this object's libraries, with the facts read so far; what that
    // search lacked facts of is what the next round would need.
    pathOf ??= firstPaths(tree);
    const path = pathOf.get(d);
    if (path === undefined) return;
    const w = new Walk(tree, config, (x) => reads.done.get(x) ?? known(x));
    for (const name of f.elf.needed) {
      const lib = w.findLibrary(name, path, f.elf, f.elf);
      const digest = lib === undefined ? undefined : tree.byPath.get(lib)?.digest;
      if (digest !== undefined && !reads.done.has(digest) && known(digest) === undefined) reads.guess(digest);
    }
    for (const x of w.need) reads.guess(x);
  });
  const lookup = (d: string): FileFacts | undefined => local.get(d) ?? reads.done.get(d) ?? known(d);
  let charged = 0;
  let rounds = 1;
  const predictor = new Predictor(tree, config);
  let pr = predictor.run(lookup);
  try {
    while (pr.need.length > 0 && rounds < MAX_ROUNDS) {
      // In `need` order, as the sequential loop did: the first ones up to MAX_FACT_READS are read.
      const got = await Promise.all(pr.need.map((d) => (charged++ < MAX_FACT_READS ? reads.need(d) : Promise.resolve<FileFacts>({ kind: 'unknown' }))));
      pr.need.forEach((d, i) => local.set(d, got[i]!));
      pr = predictor.run(lookup);
      rounds++;
    }
  } finally {
    reads.stop();
  }
  if (pr.need.length > 0) pr = predictor.run((d) => lookup(d) ?? { kind: 'unknown' });
  return { ...pr, reads: Math.min(charged, MAX_FACT_READS), rounds };
}

/** The first path (in tree order) of each content digest. */
function firstPaths(tree: StartupTree): Map<string, string> {
  const m = new Map<string, string>();
  for (const e of tree.byPath.values()) if (e.digest !== undefined && !m.has(e.digest)) m.set(e.digest, e.path);
  return m;
}
