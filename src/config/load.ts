// Loading hearth.toml: read, parse (smol-toml), validate (ConfigSchema), resolve paths. Every
// problem names the file and where in it (line:column or key path) and says what would fix it;
// all problems are reported together so the admin can fix them in one pass.
import { readFile } from 'node:fs/promises';
import { isAbsolute, join, relative, resolve } from 'node:path';
import { parse as parseToml, TomlError } from 'smol-toml';
import type { z } from 'zod';
import { HearthError } from '../core/errors.ts';
import { ConfigSchema } from './schema.ts';
import type { HearthConfig } from './schema.ts';

export type ConfigErrorCode = 'CONFIG_INVALID' | 'CONFIG_MISSING' | 'CONFIG_IO';

export class ConfigError extends HearthError {
  declare readonly code: ConfigErrorCode;
  /** Absolute path of the file at fault. */
  readonly file: string;
  /** One line per problem, each starting with the file name. */
  readonly problems: string[];
  constructor(code: ConfigErrorCode, file: string, problems: string[], options?: ErrorOptions) {
    super(code, formatConfigProblems(problems), options);
    this.file = file;
    this.problems = problems;
  }
}

export type LoadedConfig = {
  /** Absolute config folder. */
  dir: string;
  /** Absolute path of hearth.toml. */
  file: string;
  config: HearthConfig;
  dataDir: string;
  tlsCert: string;
  tlsKey: string;
};

export const CONFIG_FILE_NAME = 'hearth.toml';

/** Problems as one message: a single problem on one line, several as a list under a heading. */
export function formatConfigProblems(problems: string[]): string {
  if (problems.length === 1) return problems[0];
  return `${problems.length} configuration problems:\n${problems.map((p) => `  - ${p}`).join('\n')}`;
}

/** The path as the admin would type it: relative to the working folder when inside it. */
export function displayPath(file: string): string {
  const rel = relative(process.cwd(), file);
  return rel && !rel.startsWith('..') && !isAbsolute(rel) ? rel : file;
}

export async function loadConfig(dir: string): Promise<LoadedConfig> {
  const absDir = resolve(dir);
  const file = join(absDir, CONFIG_FILE_NAME);
  const shown = displayPath(file);
  let text: string;
  try {
    text = await readFile(file, 'utf8');
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (code === 'ENOENT') {
      throw new ConfigError('CONFIG_MISSING', file, [`${shown}: no such file: run \`hearth serve\` once to create a default, or copy config/hearth.example.toml`], { cause: err });
    }
    throw new ConfigError('CONFIG_IO', file, [`${shown}: cannot read: ${(err as Error).message}`], { cause: err });
  }
  return loadedFromText(absDir, text);
}

/** Validate `text` as the hearth.toml of `dir` (absolute) and resolve its paths. */
export function loadedFromText(absDir: string, text: string): LoadedConfig {
  const file = join(absDir, CONFIG_FILE_NAME);
  const config = parseConfigText(text, displayPath(file), file);
  return {
    dir: absDir,
    file,
    config,
    dataDir: resolve(absDir, config.data_dir),
    tlsCert: resolve(absDir, config.tls.cert),
    tlsKey: resolve(absDir, config.tls.key),
  };
}

/** Parse and validate the text of a hearth.toml; throws ConfigError('CONFIG_INVALID'). */
export function parseConfigText(text: string, shown: string, file = shown): HearthConfig {
  let raw: unknown;
  try {
    raw = parseToml(text);
  } catch (err) {
    if (err instanceof TomlError) {
      const message = err.message.split('\n')[0].replace(/^Invalid TOML document: /, '');
      throw new ConfigError('CONFIG_INVALID', file, [`${shown}:${err.line}:${err.column}: TOML syntax error: ${message}${syntaxHint(message)}\n${err.codeblock.trimEnd()}`], { cause: err });
    }
    throw err;
  }
  const result = ConfigSchema.safeParse(raw);
  if (!result.success) {
    throw new ConfigError('CONFIG_INVALID', file, result.error.issues.flatMap((issue) => describeIssue(issue, raw).map((p) => `${shown}: ${p}`)));
  }
  const problems = crossChecks(result.data).map((p) => `${shown}: ${p}`);
  if (problems.length > 0) throw new ConfigError('CONFIG_INVALID', file, problems);
  return result.data;
}

function syntaxHint(message: string): string {
  if (/invalid value|unexpected|end-of-line/i.test(message)) return ' (strings need "quotes", lists are [a, b], tables are [name])';
  if (/duplicate|already|overwrite/i.test(message)) return ' (each key may appear only once per table)';
  return '';
}

/** Problems the schema cannot see: two enabled listeners on one address. */
function crossChecks(config: HearthConfig): string[] {
  const problems: string[] = [];
  const seen = new Map<string, string>();
  for (const [name, l] of Object.entries(config.listeners)) {
    if (!l || !l.enabled || l.listen.port === 0) continue; // port 0: the OS picks a free one
    const key = `${l.listen.host}|${l.listen.port}`;
    const other = seen.get(key);
    if (other) problems.push(`listeners.${name}.listen: port ${l.listen.port} is already used by listeners.${other}: give each listener its own port`);
    else seen.set(key, name);
  }
  return problems;
}

// --- describing zod issues -------------------------------------------------------------

type Issue = z.core.$ZodIssue;
type Path = PropertyKey[];

function formatPath(path: Path): string {
  let out = '';
  for (const part of path) {
    if (typeof part === 'number') out += `[${part}]`;
    else out += out === '' ? String(part) : `.${String(part)}`;
  }
  return out || '(top level)';
}

function valueAt(raw: unknown, path: Path): unknown {
  let v = raw;
  for (const part of path) {
    if (v === null || typeof v !== 'object') return undefined;
    v = (v as Record<PropertyKey, unknown>)[part];
  }
  return v;
}

function describeValue(v: unknown): string {
  if (typeof v === 'string') return `the string ${JSON.stringify(v)}`;
  if (typeof v === 'number') return `the number ${v}`;
  if (typeof v === 'boolean') return `${v}`;
  if (Array.isArray(v)) return 'a list';
  if (v instanceof Date) return 'a date';
  if (v && typeof v === 'object') return 'a table';
  return String(v);
}

const EXAMPLES: Record<string, string> = {
  hostname: 'hostname = "mail.example.org"',
  domains: 'domains = ["example.org"]',
  listen: 'listen = "127.0.0.1:2525"',
  tls: 'tls = "starttls"  # or "implicit", "plain"',
};

function describeIssue(issue: Issue, raw: unknown): string[] {
  return [describeIssueLines(issue, raw)].flat();
}

function describeIssueLines(issue: Issue, raw: unknown): string | string[] {
  const path = issue.path as Path;
  const where = formatPath(path);
  const value = valueAt(raw, path);
  switch (issue.code) {
    case 'unrecognized_keys': {
      const known = knownKeysAt(path);
      const parent = path.length ? `${formatPath(path)}: ` : '';
      return issue.keys
        .map((key) => {
          const guess = closest(key, known);
          const topLevel = path.length > 0 && knownKeysAt([]).includes(key);
          const hint = guess
            ? `did you mean "${guess}"?`
            : topLevel
              ? `"${key}" is a top-level key: move it above the first [table] header`
              : known.length
                ? `known keys here: ${known.join(', ')}`
                : 'remove it';
          return `${parent}unknown key "${key}": ${hint}`;
        });
    }
    case 'invalid_type': {
      const last = path[path.length - 1];
      if (value === undefined) {
        const example = typeof last === 'string' ? EXAMPLES[last] : undefined;
        return `${where}: missing required key: add ${example ?? `${String(last)} = ...`}`;
      }
      return `${where}: expected ${article(issue.expected)}, got ${describeValue(value)}${typeof value === 'string' && issue.expected === 'number' ? ' (write the number without quotes)' : ''}`;
    }
    case 'invalid_value': {
      const options = issue.values.map((v) => JSON.stringify(v));
      const guess = typeof value === 'string' ? closest(value, issue.values.map(String)) : undefined;
      return `${where}: ${JSON.stringify(value)} is not allowed: write one of ${options.join(', ')}${guess ? ` (did you mean "${guess}"?)` : ''}`;
    }
    case 'invalid_format':
      return `${where}: ${JSON.stringify(value)} ${issue.message}`;
    case 'too_small':
      if (issue.origin === 'array' && issue.message && !issue.message.startsWith('Too small')) return `${where}: ${issue.message}`;
      return `${where}: ${describeValue(value)} is too small: the minimum is ${String(issue.minimum)}`;
    case 'too_big':
      return `${where}: ${describeValue(value)} is too big: the maximum is ${String(issue.maximum)}`;
    case 'invalid_union':
      return `${where}: ${describeValue(value)} is not valid here: write a number or a string`;
    default:
      return `${where}: ${issue.message}`;
  }
}

function article(type: string): string {
  if (type === 'array') return 'a list';
  if (type === 'object') return 'a table';
  return /^[aeiou]/.test(type) ? `an ${type}` : `a ${type}`;
}

type AnySchema = { _zod: { def: Record<string, unknown> & { type: string } } };

/** The keys a table at `path` accepts, read from ConfigSchema itself. */
export function knownKeysAt(path: Path): string[] {
  let node: AnySchema | undefined = ConfigSchema as unknown as AnySchema;
  for (const part of [...path, null]) {
    // unwrap optional/default/prefault/pipe wrappers
    for (let i = 0; node && i < 10; i++) {
      const def: Record<string, unknown> & { type: string } = node._zod.def;
      if (def.innerType) node = def.innerType as AnySchema;
      else if (def.type === 'pipe') node = def.in as AnySchema;
      else break;
    }
    if (part === null) break;
    const shape = node?._zod.def.shape as Record<string, AnySchema> | undefined;
    node = shape && typeof part === 'string' ? shape[part] : undefined;
  }
  const shape = node?._zod.def.shape as Record<string, AnySchema> | undefined;
  return shape ? Object.keys(shape) : [];
}

function closest(word: string, candidates: string[]): string | undefined {
  let best: string | undefined;
  let bestDistance = Infinity;
  const w = word.toLowerCase();
  for (const c of candidates) {
    const d = editDistance(w, c.toLowerCase());
    if (d < bestDistance) {
      bestDistance = d;
      best = c;
    }
  }
  return best !== undefined && bestDistance <= Math.max(1, Math.floor(word.length / 3)) ? best : undefined;
}

/** Optimal string alignment distance: insertions, deletions, substitutions, adjacent swaps ("smpt" → "smtp"). */
function editDistance(a: string, b: string): number {
  const d: number[][] = Array.from({ length: a.length + 1 }, (_, i) => Array.from({ length: b.length + 1 }, (_, j) => (i === 0 ? j : j === 0 ? i : 0)));
  for (let i = 1; i <= a.length; i++) {
    for (let j = 1; j <= b.length; j++) {
      d[i][j] = Math.min(d[i - 1][j] + 1, d[i][j - 1] + 1, d[i - 1][j - 1] + (a[i - 1] === b[j - 1] ? 0 : 1));
      if (i > 1 && j > 1 && a[i - 1] === b[j - 2] && a[i - 2] === b[j - 1]) d[i][j] = Math.min(d[i][j], d[i - 2][j - 2] + 1);
    }
  }
  return d[a.length][b.length];
}
