// The browser entry point (`@genq/client/browser`): follow one generation or all of a
// user's generations over genq's Server-Sent Events, authenticated by a token the backend
// minted (`mintEventsToken`). No Node imports, no database driver.

import { finalEvent, subscribe, type GenqEvent, type SubscribeOptions, type Unsubscribe } from "./events.js";

export type {
  EventSourceConstructor,
  EventSourceLike,
  GenerationEvent,
  GenqEvent,
  MessageEventLike,
  SubscribeOptions,
  Unsubscribe,
} from "./events.js";
export * from "./types.js";

function streamUrl(baseUrl: string, path: string, token: string): string {
  const url = new URL(path, baseUrl.endsWith("/") ? baseUrl : `${baseUrl}/`);
  url.searchParams.set("token", token);
  return url.toString();
}

/**
 * Follows generation `id`: `onEvent` gets its current state first, then every change; the
 * subscription ends by itself after a final state (succeeded, failed, cancelled). Returns
 * the function that stops it.
 */
export function subscribeGeneration(
  baseUrl: string,
  token: string,
  id: string,
  onEvent: (event: GenqEvent) => void,
  opts: SubscribeOptions = {},
): Unsubscribe {
  const path = `v1/generations/${encodeURIComponent(id)}/events`;
  return subscribe((t) => streamUrl(baseUrl, path, t), token, onEvent, opts, finalEvent);
}

/**
 * Follows every generation of the token's user: unfinished ones and recent changes first,
 * then every change, until stopped with the returned function.
 */
export function subscribeUser(
  baseUrl: string,
  token: string,
  onEvent: (event: GenqEvent) => void,
  opts: SubscribeOptions = {},
): Unsubscribe {
  return subscribe((t) => streamUrl(baseUrl, "v1/users/me/events", t), token, onEvent, opts, () => false);
}
