/**
 * The page's only way to the server: JSON and raw-byte requests with the token (if any) and readable errors, and job
 * events read as Server-Sent Events over fetch (EventSource cannot send an Authorization header).
 */

const TOKEN_KEY = 'graft.token';

/** A token in the URL fragment (#token=...) moves to sessionStorage and out of the address bar. */
export function initToken(): void {
  const m = /(?:^#|&)token=([^&]*)/.exec(location.hash);
  if (!m) return;
  sessionStorage.setItem(TOKEN_KEY, decodeURIComponent(m[1]!));
  history.replaceState(null, '', location.pathname + location.search);
}

export function token(): string | null {
  return sessionStorage.getItem(TOKEN_KEY);
}

export function setToken(t: string): void {
  if (t) sessionStorage.setItem(TOKEN_KEY, t);
  else sessionStorage.removeItem(TOKEN_KEY);
}

export function authHeaders(extra: Record<string, string> = {}): Record<string, string> {
  const t = token();
  return t ? { ...extra, authorization: `Bearer ${t}` } : extra;
}

/** An error the user should read: the server's own message when it sent one. */
export class ApiError extends Error {
  constructor(
    message: string,
    readonly status: number,
  ) {
    super(message);
    this.name = 'ApiError';
  }
}

/** Listeners told about 401s (the page then asks for a token). */
export const unauthorized = new Set<() => void>();

async function errorOf(res: Response): Promise<ApiError> {
  let message = `${res.status} ${res.statusText}`;
  const text = await res.text().catch(() => '');
  try {
    const j = JSON.parse(text) as { error?: unknown; message?: unknown };
    if (typeof j.error === 'string') message = j.error;
    else if (typeof j.message === 'string') message = j.message;
  } catch {
    if (text.trim()) message = text.trim().slice(0, 300);
  }
  if (res.status === 401) for (const f of unauthorized) f();
  return new ApiError(message, res.status);
}

export type Body = Blob | ArrayBuffer | Record<string, unknown> | undefined;

export async function request(method: string, path: string, body?: Body, signal?: AbortSignal): Promise<Response> {
  const headers: Record<string, string> = {};
  let payload: BodyInit | undefined;
  if (body instanceof Blob || body instanceof ArrayBuffer) {
    headers['content-type'] = 'application/octet-stream';
    payload = body;
  } else if (body !== undefined) {
    headers['content-type'] = 'application/json';
    payload = JSON.stringify(body);
  }
  let res: Response;
  try {
    res = await fetch(path, { method, headers: authHeaders(headers), body: payload, signal });
  } catch (err) {
    if ((err as Error).name === 'AbortError') throw err;
    throw new ApiError(`cannot reach the graft server (${(err as Error).message}); is graft serve still running?`, 0);
  }
  if (!res.ok) throw await errorOf(res);
  return res;
}

export async function api<T>(method: string, path: string, body?: Body, signal?: AbortSignal): Promise<T> {
  const res = await request(method, path, body, signal);
  if (res.status === 204) return undefined as T;
  return (await res.json()) as T;
}

export const get = <T>(path: string, signal?: AbortSignal) => api<T>('GET', path, undefined, signal);
export const post = <T>(path: string, body?: Body, signal?: AbortSignal) => api<T>('POST', path, body ?? {}, signal);
export const del = <T>(path: string) => api<T>('DELETE', path);

/** Query string from the defined values. */
export function qs(params: Record<string, string | number | undefined>): string {
  const u = new URLSearchParams();
  for (const [k, v] of Object.entries(params)) if (v !== undefined && v !== '') u.set(k, String(v));
  const s = u.toString();
  return s ? `?${s}` : '';
}

/** The message to show for anything thrown. */
export function messageOf(err: unknown): string {
  if (err instanceof Error) return err.message;
  return String(err);
}

// ---- Jobs ----

export type JobState = 'queued' | 'running' | 'done' | 'failed' | 'cancelled';

export interface Progress {
  task: string;
  done: number;
  total: number;
  unit?: string;
  rate?: number;
  etaSeconds?: number;
  note?: string;
}

export interface JobInfo {
  id: string;
  kind: string;
  project?: string;
  state: JobState;
  position?: number;
  progress?: Progress;
  result?: unknown;
  error?: string;
}

export interface JobHandlers {
  state?(s: { state: JobState; position?: number }): void;
  progress?(p: Progress): void;
  epoch?(e: EpochLog): void;
  log?(l: { level: string; message: string }): void;
  image?(i: { step: number; png: string }): void;
  result?(r: unknown): void;
  error?(e: { message: string }): void;
}

export interface EpochLog {
  epoch: number;
  trainLoss: number;
  trainAcc: number;
  valLoss?: number;
  valAcc?: number;
  lr: number;
}

const FINAL: JobState[] = ['done', 'failed', 'cancelled'];

/**
 * Follow a job's events until it ends; resolves with its final state. A dropped connection is resumed after the
 * last event seen (the server replays from there).
 */
export async function followJob(id: string, handlers: JobHandlers, signal?: AbortSignal): Promise<JobState> {
  let last = 0;
  let final: JobState | undefined;
  for (let attempt = 0; attempt < 20 && !final; attempt++) {
    if (signal?.aborted) throw new DOMException('stopped following the job', 'AbortError');
    try {
      const res = await request('GET', `/api/jobs/${encodeURIComponent(id)}/events${qs({ after: last || undefined })}`, undefined, signal);
      if (!res.body) throw new ApiError('the browser gave no event stream', 0);
      const reader = res.body.pipeThrough(new TextDecoderStream()).getReader();
      let buf = '';
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        buf += value.replace(/\r\n?/g, '\n');
        let cut: number;
        while ((cut = buf.indexOf('\n\n')) >= 0) {
          const block = buf.slice(0, cut);
          buf = buf.slice(cut + 2);
          let type = 'message';
          let data = '';
          let seq: number | undefined;
          for (const line of block.split('\n')) {
            if (line.startsWith(':')) continue;
            const i = line.indexOf(':');
            const field = i < 0 ? line : line.slice(0, i);
            const v = i < 0 ? '' : line.slice(i + 1).replace(/^ /, '');
            if (field === 'event') type = v;
            else if (field === 'data') data += (data ? '\n' : '') + v;
            else if (field === 'id') seq = Number(v);
          }
          if (!data) continue;
          if (seq) last = seq;
          const payload = JSON.parse(data) as never;
          const h = handlers[type as keyof JobHandlers] as ((d: never) => void) | undefined;
          h?.(payload);
          if (type === 'state' && FINAL.includes((payload as { state: JobState }).state)) final = (payload as { state: JobState }).state;
        }
      }
    } catch (err) {
      if ((err as Error).name === 'AbortError') throw err;
      if (err instanceof ApiError && err.status >= 400) throw err;
    }
    if (!final) {
      // The stream ended early (a proxy, a sleeping laptop): ask where the job is, then resume.
      const info = await get<JobInfo>(`/api/jobs/${encodeURIComponent(id)}`, signal);
      if (FINAL.includes(info.state) && last === 0) {
        if (info.result !== undefined) handlers.result?.(info.result);
        if (info.error) handlers.error?.({ message: info.error });
        handlers.state?.({ state: info.state });
        return info.state;
      }
      await new Promise((r) => setTimeout(r, Math.min(5000, 300 * (attempt + 1))));
    }
  }
  if (!final) throw new ApiError(`lost the connection to job ${id}`, 0);
  return final;
}

// ---- Shapes of the API ----

export interface ProjectImage {
  id: string;
  ext: string;
  name: string;
  bytes: number;
  width: number;
  height: number;
  addedAt: string;
}

export interface Project {
  id: string;
  name: string;
  backbone: string;
  createdAt: string;
  classes: { name: string; images: ProjectImage[] }[];
  runs?: string[];
}

export interface Models {
  catalog: { name: string; family: string; description: string; format: string; size: number[] }[];
  projects: { id: string; name: string; runs: string[] }[];
}

export interface Prediction {
  label: string;
  probability: number;
}

export interface EvaluationItem {
  image: string;
  true: number;
  predicted: number;
  probability: number;
  trueProbability: number;
  loss: number;
}

export interface PageEvaluation {
  run: string;
  classes: string[];
  mode: 'frozen' | 'finetune';
  evaluation: {
    n: number;
    accuracy: number;
    balancedAccuracy: number;
    logLoss: number;
    perClass: { class: string; precision: number; recall: number; f1: number; support: number }[];
    confusion: number[][];
    mostConfused?: { trueClass: string; predictedClass: string; count: number }[];
  };
  items: EvaluationItem[];
  history: EpochLog[];
  model: string;
}

export interface AttackResult {
  method: string;
  eps: number;
  target?: string;
  success: boolean;
  steps: number;
  linfLevels: number;
  psnr: number;
  amplification: number;
  original: { png: string; top: Prediction[] };
  adversarial: { png: string; top: Prediction[] };
  perturbation: { png: string };
}

export interface FeatureMapLayer {
  layer: string;
  op: string;
  role: string;
  shape: number[];
  channels: number[];
  stats: { min: number; max: number; mean: number; zeroFraction?: number; [k: string]: number | undefined };
  png: string;
}
