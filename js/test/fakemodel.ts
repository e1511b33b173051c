// A stand-in for anywidget's model: the JS unit tests' boundary.
import type { AnyModel } from "@anywidget/types";

type Handler = (...args: any[]) => void;

export class FakeModel implements AnyModel<Record<string, any>> {
  sent: { content: any; buffers?: unknown }[] = [];
  /** What each save_changes() sent to the kernel: the traits set since the one before. */
  saved: Record<string, unknown>[] = [];
  private dirty: Record<string, unknown> = {};
  private handlers = new Map<string, Handler[]>();
  widget_manager = { get_model: () => Promise.reject(new Error("no widget manager in tests")) };
  constructor(public state: Record<string, any>) {}
  get(name: string | number | symbol) {
    return this.state[name as string];
  }
  set(name: string | number | symbol, value: unknown) {
    this.state[name as string] = value;
    this.dirty[name as string] = value;
    this.emit(`change:${String(name)}`);
  }
  save_changes() {
    this.saved.push(this.dirty);
    this.dirty = {};
  }
  on(event: string, cb: Handler) {
    this.handlers.set(event, [...(this.handlers.get(event) ?? []), cb]);
  }
  off(event?: string | null, cb?: Handler | null) {
    if (!event) return this.handlers.clear();
    this.handlers.set(event, (this.handlers.get(event) ?? []).filter((h) => cb && h !== cb));
  }
  send(content: unknown, _callbacks?: unknown, buffers?: unknown) {
    this.sent.push({ content, buffers });
  }
  /** anywidget's experimental.invoke as the kernel answers it: records the request and replies
   *  with `answer`'s reply, or (`answer` gives undefined) waits for `reply(i, ...)`. An aborted
   *  request rejects, as anywidget's does. */
  invoked: { name: string; msg: any }[] = [];
  private waiting: ((reply: unknown) => void)[] = [];
  answer: (name: string, msg: any) => any = () => ({ type: "error", message: "no kernel in tests" });
  invoke = <T>(name: string, msg?: any, options: { signal?: AbortSignal } = {}): Promise<[T, DataView[]]> => {
    this.invoked.push({ name, msg });
    return new Promise((resolve, reject) => {
      this.waiting.push((reply) => resolve([reply as T, []]));
      options.signal?.addEventListener("abort", () => reject(options.signal!.reason));
      const now = this.answer(name, msg);
      if (now !== undefined) resolve([now as T, []]);
    });
  };
  /** Answer request `i` (negative: from the end) now; the views' awaits run before it returns. */
  async reply(i: number, reply: unknown) {
    this.waiting.at(i)!(reply);
    await new Promise((r) => setTimeout(r, 0));
  }
  emit(event: string, ...args: unknown[]) {
    for (const h of this.handlers.get(event) ?? []) h(...args);
  }
}
