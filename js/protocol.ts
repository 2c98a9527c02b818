/**
 * The explorer's request/response protocol, view side (its twin is widgets/protocol.py).
 * The view asks, the kernel answers; every reply, errors included, carries its request's id.
 */

import type { Traits } from "./model";

/**
 * The explorer's choices the kernel does not act on (requests name their class and metric themselves).
 * The view tells the kernel these in a `state` request once the user pauses, so that Python sees them
 * (`explorer.layer`), quietly like any request. Its twin is `STATE_TRAITS` in widgets/protocol.py.
 */
export const STATE_TRAITS = ["layer", "highlight", "selected", "cls", "metric"] as const;
export type StateTrait = (typeof STATE_TRAITS)[number];

export type Request =
  | { kind: "ping"; id: number }
  | { kind: "state"; id: number; state: Partial<Pick<Traits, StateTrait>> }
  | {
      kind: "slices";
      id: number;
      image: number; // the image the view shows: the kernel refuses to answer for another
      site: string;
      metric: string;
      classes: number[];
      base?: boolean; // the unperturbed model's numbers instead of the current trace's
    }
  | { kind: "logits"; id: number; image: number; site: string; start: number; stop: number }
  | { kind: "memories"; id: number; image: number; site: string; layer: number; token: number };

/**
 * A request as it travels: marked quiet, so that the server extension keeps the kernel's busy status
 * of it from the page (vitlens_widgets_server/quiet.py): JupyterLab would redraw its kernel indicators
 * twice per request. Trait changes the kernel acts on (an image, a what-if: a retrace) are widget
 * updates, not requests, and show the kernel busy.
 */
export type Sent = Request & { quiet: true };

/** Which trace a reply describes: drop it when the view has moved on. */
interface About {
  id: number;
  image: number;
  version: number;
}

export type Reply =
  | { kind: "pong"; id: number }
  | { kind: "state"; id: number }
  | (About & {
      kind: "slices";
      site: string;
      metric: string;
      classes: number[];
      rows: number;
      tokens: number;
      base: boolean;
    })
  | (About & {
      kind: "logits";
      site: string;
      start: number;
      stop: number;
      rows: number;
      tokens: number;
      classes: number;
    })
  | (About & {
      kind: "memories";
      token: number;
      layer: number;
      memory_kind: string; // the site whose sublayer's memories these are ("attn" or "mlp")
      memories: number[];
      classes: number[][];
    })
  | { kind: "error"; id: number | null; request: string | null; message: string };

export type Kind = Request["kind"];
const REPLY_KINDS = ["pong", "state", "slices", "logits", "memories", "error"] as const;
// Fails to compile when REPLY_KINDS and the Reply union disagree.
const _sameKinds: [Reply["kind"], (typeof REPLY_KINDS)[number]] extends [
  (typeof REPLY_KINDS)[number],
  Reply["kind"],
]
  ? true
  : never = true;
void _sameKinds;
/** The request without its id (the source assigns ids). */
export type Ask<K extends Kind> = Omit<Extract<Request, { kind: K }>, "id">;
/** Any request without its id. */
export type AnyAsk = { [K in Kind]: Ask<K> }[Kind];
/** The reply a request of kind K gets when it succeeds. */
export type Answer<K extends Kind> = Extract<Reply, { kind: K extends "ping" ? "pong" : K }>;

export function isReply(content: unknown): content is Reply {
  const c = content as { kind?: unknown; id?: unknown } | null;
  return (
    !!c &&
    typeof c === "object" &&
    typeof c.kind === "string" &&
    (REPLY_KINDS as readonly string[]).includes(c.kind)
  );
}
