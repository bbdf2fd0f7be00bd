// The webmail UI's only way to the server: JSON over fetch (with the session's CSRF token on
// every POST) and the Server-Sent Events stream. It also owns the "server unreachable" state.
import { signal, computed } from '@preact/signals';
import type { ServerEvent, Session } from '../api-types.ts';

/** undefined while we ask the server; null when logged out. */
export const session = signal<Session | null | undefined>(undefined);

/** A fetch failed at the network level (or the server answered 502/503/504). */
export const fetchDown = signal(false);
/** The event stream is not connected (only counted while logged in). */
export const streamDown = signal(false);
export const unreachable = computed(() => fetchDown.value || (session.value != null && streamDown.value));

export class ApiError extends Error {
  readonly status: number;
  constructor(status: number, message: string) {
    super(message);
    this.status = status;
    this.name = 'ApiError';
  }
}

export const apiUrl = (path: string): string => `/api/${path}`;

export function folderPath(folder: string): string {
  return `folders/${encodeURIComponent(folder)}`;
}

let probeTimer: ReturnType<typeof setTimeout> | undefined;

/** While the server is unreachable, ask it every few seconds whether it is back. */
function startProbe(): void {
  if (probeTimer) return;
  const probe = async (): Promise<void> => {
    try {
      const res = await fetch(apiUrl('session'), { credentials: 'same-origin' });
      if (res.status < 502) {
        probeTimer = undefined;
        fetchDown.value = false;
        onRecover();
        return;
      }
    } catch {
      // still down
    }
    probeTimer = setTimeout(() => void probe(), 3000);
  };
  probeTimer = setTimeout(() => void probe(), 2000);
}

const recoverHandlers: Array<() => void> = [];
export function onServerRecovered(fn: () => void): void {
  recoverHandlers.push(fn);
}
function onRecover(): void {
  for (const fn of recoverHandlers) fn();
}

export async function api<T>(path: string, body?: unknown): Promise<T> {
  const method = body === undefined ? 'GET' : 'POST';
  const headers: Record<string, string> = { Accept: 'application/json' };
  if (method === 'POST') {
    headers['Content-Type'] = 'application/json';
    if (session.value) headers['X-CSRF-Token'] = session.value.csrf;
  }
  let res: Response;
  try {
    res = await fetch(apiUrl(path), { method, headers, body: body === undefined ? undefined : JSON.stringify(body), credentials: 'same-origin' });
  } catch {
    fetchDown.value = true;
    startProbe();
    throw new ApiError(0, 'The server cannot be reached.');
  }
  if (res.status >= 502 && res.status <= 504) {
    fetchDown.value = true;
    startProbe();
    throw new ApiError(res.status, 'The server cannot be reached.');
  }
  if (fetchDown.value) {
    fetchDown.value = false;
    onRecover();
  }
  if (res.status === 401 && path !== 'login' && path !== 'session') {
    // The session expired (or the server restarted): back to the login screen.
    session.value = null;
  }
  if (!res.ok) {
    let message = `${res.status} ${res.statusText}`;
    try {
      const j = (await res.json()) as { error?: string };
      if (j.error) message = j.error;
    } catch {
      // not JSON
    }
    throw new ApiError(res.status, message);
  }
  return (await res.json()) as T;
}

export async function apiText(path: string): Promise<string> {
  let res: Response;
  try {
    res = await fetch(apiUrl(path), { credentials: 'same-origin' });
  } catch {
    fetchDown.value = true;
    startProbe();
    throw new ApiError(0, 'The server cannot be reached.');
  }
  if (!res.ok) throw new ApiError(res.status, `${res.status} ${res.statusText}`);
  return res.text();
}

let events: EventSource | undefined;
let reconnectTimer: ReturnType<typeof setTimeout> | undefined;

/**
 * Listen to GET /api/events. EventSource retries by itself after a dropped connection; when it
 * gives up (a non-200 answer closes it for good) we open a new one a little later.
 * `onReconnect` runs after a reconnection, since events may have been missed meanwhile.
 */
export function connectEvents(onEvent: (e: ServerEvent) => void, onReconnect: () => void): void {
  disconnectEvents();
  let wasDown = false;
  const es = new EventSource(apiUrl('events'));
  events = es;
  es.addEventListener('open', () => {
    streamDown.value = false;
    if (wasDown) onReconnect();
    wasDown = false;
  });
  es.addEventListener('change', (msg) => {
    try {
      onEvent(JSON.parse((msg as MessageEvent<string>).data) as ServerEvent);
    } catch {
      // a malformed event is not worth breaking the UI over
    }
  });
  es.addEventListener('error', () => {
    if (events !== es) return;
    wasDown = true;
    streamDown.value = true;
    if (es.readyState === EventSource.CLOSED) {
      clearTimeout(reconnectTimer);
      reconnectTimer = setTimeout(() => {
        if (events !== es || session.value == null) return;
        connectEvents(onEvent, onReconnect);
        // The new stream reports 'open' as a first connection, so catch up now.
        onReconnect();
      }, 3000);
    }
  });
}

export function disconnectEvents(): void {
  clearTimeout(reconnectTimer);
  events?.close();
  events = undefined;
  streamDown.value = false;
}

/** Read a File as base64 (for ComposeRequest.attachments). */
export function fileToBase64(file: File): Promise<string> {
  return new Promise((resolve, reject) => {
    const reader = new FileReader();
    reader.onload = () => {
      const url = String(reader.result);
      resolve(url.slice(url.indexOf(',') + 1));
    };
    reader.onerror = () => reject(reader.error ?? new Error('could not read the file'));
    reader.readAsDataURL(file);
  });
}
