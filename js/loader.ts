// The small _esm every view carries (instead of its own copy of the whole bundle): the one
// copy lives in a shared kernel-side model (`code`, `style`), found by id through the widget
// manager, evaluated once per page and reused by every view. Built to static/loader.js.
// (With ANYWIDGET_HMR=1 views carry the real bundle as a file path instead, for hot reload.)
import type { AnyModel, RenderProps } from "@anywidget/types";

type Module = { render(props: RenderProps): unknown };
const CACHE: Record<string, Promise<Module>> = ((globalThis as any).__neuronwidget_bundles ??= {});

type Parts = { code: string; style: string };

async function fromHolder(model: AnyModel, id: string): Promise<Parts> {
  // the holder is created before any view in the kernel, but a restored page may still be
  // registering models when a view renders: retry for a few seconds
  for (let i = 0; ; i++) {
    try {
      const shared = await model.widget_manager.get_model(id);
      return { code: String(shared.get("code") ?? ""), style: String(shared.get("style") ?? "") };
    } catch (e) {
      if (i >= 30) throw e;
      await new Promise((r) => setTimeout(r, 100));
    }
  }
}

type Invoke = NonNullable<RenderProps["experimental"]>["invoke"];

/** Fallback for hosts whose widget manager cannot hand out the shared model: ask the kernel
 *  (the bundle_request command every view answers). */
async function fromKernel(invoke: Invoke | undefined): Promise<Parts> {
  if (!invoke) throw new Error("the shared bundle was not found and this front end cannot ask the kernel for it");
  try {
    const [reply] = await invoke<{ code: string; style: string }>("bundle_request", { type: "bundle" }, { signal: AbortSignal.timeout(15000) });
    return { code: String(reply.code), style: String(reply.style) };
  } catch {
    throw new Error("the shared bundle was not found and the kernel did not send it");
  }
}

function load(model: AnyModel, invoke: Invoke | undefined): Promise<Module> {
  const digest = String(model.get("_bundle_digest"));
  return (CACHE[digest] ??= (async () => {
    let parts: Parts;
    try {
      parts = await fromHolder(model, String(model.get("_bundle_id")));
    } catch {
      parts = await fromKernel(invoke);
    }
    const style = parts.style;
    if (style && !document.getElementById(`nw-css-${digest}`)) {
      const el = document.createElement("style");
      el.id = `nw-css-${digest}`;
      el.textContent = style;
      document.head.appendChild(el);
    }
    const url = URL.createObjectURL(new Blob([parts.code], { type: "text/javascript" }));
    try {
      return (await import(/* @vite-ignore */ url)).default as Module;
    } finally {
      URL.revokeObjectURL(url);
    }
  })());
}

export default {
  async render(props: RenderProps) {
    let mod: Module;
    try {
      mod = await load(props.model, props.experimental?.invoke);
    } catch (e) {
      delete CACHE[String(props.model.get("_bundle_digest"))];
      const msg = document.createElement("div");
      msg.textContent = `neuronwidget could not load its views (${(e as Error).message}). Re-run the cell.`;
      props.el.appendChild(msg);
      return;
    }
    return mod.render(props);
  },
};
