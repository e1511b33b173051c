// Requests to the kernel: anywidget commands. The kernel's `@command` method named
// `<type>_request` (neuronwidget/widgets/messages.py's command_name) answers each request,
// and anywidget pairs the answer with its request, so no view matches replies by hand.
import type { ErrorReply, OpenerRequest, Request } from "./messages";

/** anywidget's request/response (RenderProps.experimental.invoke): the answer to one request. */
export type Invoke = <T>(name: string, msg?: any, options?: { signal?: AbortSignal }) => Promise<[T, DataView[]]>;

type Channel = {
  send(content: unknown, callbacks?: unknown, buffers?: any): void;
  on(event: string, cb: (...args: any[]) => void): void;
  off(event?: string | null, cb?: ((...args: any[]) => void) | null): void;
};

/** anywidget's invoke for a model anywidget did not render itself (a NeuronView shown inside an
 *  Explorer gets its model from the widget manager): the same command messages on the wire. */
export function invokeOn(model: Channel): Invoke {
  let next = 0;
  return <T>(name: string, msg?: any, options: { signal?: AbortSignal } = {}) =>
    new Promise<[T, DataView[]]>((resolve, reject) => {
      const id = `nw-${Date.now()}-${(next += 1)}`;
      const signal = options.signal;
      const handler = (reply: any, buffers: DataView[]) => {
        if (reply?.id !== id || reply?.kind !== "anywidget-command-response") return;
        model.off("msg:custom", handler);
        resolve([reply.response as T, buffers ?? []]);
      };
      if (signal?.aborted) return reject(signal.reason);
      signal?.addEventListener("abort", () => {
        model.off("msg:custom", handler);
        reject(signal.reason);
      });
      model.on("msg:custom", handler);
      model.send({ id, kind: "anywidget-command", name, msg });
    });
}

const TIMEOUT_MS = 600_000; // a kernel that never answers (stopped, restarted) is reported, not waited for

/** One request: its reply, an ErrorReply saying the kernel did not answer, or null when `signal`
 *  dropped it (a newer request of the same box supersedes it). */
export type Ask = <R>(req: Request | OpenerRequest, signal?: AbortSignal) => Promise<R | ErrorReply | null>;

export function asker(invoke: Invoke): Ask {
  return async <R>(req: Request | OpenerRequest, signal?: AbortSignal) => {
    const timeout = AbortSignal.timeout(TIMEOUT_MS);
    const both = signal && typeof AbortSignal.any === "function" ? AbortSignal.any([signal, timeout]) : signal ?? timeout;
    try {
      const [reply] = await invoke<R | ErrorReply>(`${req.type}_request`, req, { signal: both });
      return reply;
    } catch (e) {
      if (signal?.aborted) return null;
      return { type: "error", message: `the kernel did not answer (${(e as Error)?.message ?? e}): run the cell again` };
    }
  };
}

/** A box's requests, newest first: starting one drops the answer of the one before. */
export function latest() {
  let current: AbortController | null = null;
  return () => {
    current?.abort();
    current = new AbortController();
    return current.signal;
  };
}
