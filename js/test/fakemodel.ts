// A stand-in for anywidget's model: the JS unit tests' boundary.
import type { Handler, Model } from "../types";

export class FakeModel implements Model {
  sent: { content: any; buffers?: unknown }[] = [];
  private handlers = new Map<string, Handler[]>();
  constructor(public state: Record<string, unknown>) {}
  get(name: string) {
    return this.state[name];
  }
  set(name: string, value: unknown) {
    this.state[name] = value;
    this.emit(`change:${name}`);
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
  emit(event: string, ...args: unknown[]) {
    for (const h of this.handlers.get(event) ?? []) h(...args);
  }
}

export function f32(values: number[]): DataView {
  const a = new Float32Array(values);
  return new DataView(a.buffer);
}
