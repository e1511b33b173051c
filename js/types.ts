// The widget models as the views see them, typed with @anywidget/types. The payload and
// message types live in messages.ts (the protocol shared with Python).
import type { AnyModel } from "@anywidget/types";
import type { CardData, NeuronData, Row, Side, Status, TokensData } from "./messages";

export type { CardData, CardSeq, Group, Header, NeuronData, Row, Status, TokensData } from "./messages";

// type aliases, not interfaces: AnyModel<T> needs T to be a plain object type
// model, layer, neuron and side are the view's public traits: set them to navigate (the kernel
// answers with the new _data, or puts them back and reports why in _status)
export type NeuronState = {
  _view_kind: "neuron";
  model: string;
  layer: number;
  neuron: number;
  side: Side;
  _data: NeuronData;
  _status: Status;
  _samples: Record<string, Row[]>; // the folded sample sections opened (key -> rows)
  _uid: string;
};
export type TokensState = { _view_kind: "tokens"; _data: TokensData };
export type CardState = { _view_kind: "card"; _data: CardData };
export type AnyState = { _view_kind: string };

export type Model<T extends AnyState = AnyState> = AnyModel<T>;
