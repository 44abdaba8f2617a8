// The events of genq's streams (docs/events.md) as types, and the subscription loop over an
// EventSource shared by `subscribeGeneration` and `subscribeUser`: parse each event into a
// `Generation`, reopen the stream with backoff when the browser gives up on it, stop on
// unsubscribe (and, for a single generation, after its final state).

import { isFinal, parseGeneration, type Generation } from "./types.js";

/** One change of a generation, as a stream delivers it. */
export interface GenerationEvent {
  type: "generation";
  /** The SSE event id (the generation's version, or the user stream's cursor). */
  eventId: string;
  generation: Generation;
}

/** Every event the streams deliver. */
export type GenqEvent = GenerationEvent;

/** The part of `MessageEvent` the client reads. */
export interface MessageEventLike {
  data: unknown;
  lastEventId?: string;
}

/** The part of an `EventSource` instance the client uses (the browser's, or `eventsource` on Node). */
export interface EventSourceLike {
  readonly readyState: number;
  onopen: ((ev: never) => unknown) | null;
  onerror: ((ev: never) => unknown) | null;
  addEventListener(type: string, listener: (ev: MessageEventLike) => void): void;
  close(): void;
}

/** An `EventSource` constructor. */
export type EventSourceConstructor = new (url: string) => EventSourceLike;

/** Options of `subscribeGeneration` and `subscribeUser`. */
export interface SubscribeOptions {
  /** The EventSource implementation (default `globalThis.EventSource`; on Node pass the `eventsource` package's). */
  EventSource?: EventSourceConstructor;
  /** Told of connection losses and unparsable events; the subscription carries on. */
  onError?: (error: Error) => void;
  /** Delay before reopening a closed stream, doubled each time up to `maxRetryMs` (default 1000). */
  retryMs?: number;
  /** Largest delay between reopen attempts (default 30000). */
  maxRetryMs?: number;
  /**
   * Asked for a fresh token before a closed stream is reopened (tokens are short-lived; an
   * expired one is refused for good). Without it the first token is used again.
   */
  refreshToken?: () => string | Promise<string>;
}

/** Stops a subscription (idempotent). */
export type Unsubscribe = () => void;

const CLOSED = 2;

/**
 * Opens the stream `urlFor(token)` and keeps it open until unsubscribed (reopened with a
 * refreshed token when `opts.refreshToken` is given); `stopAfter` ends it after an event.
 */
export function subscribe(
  urlFor: (token: string) => string,
  token: string,
  onEvent: (event: GenqEvent) => void,
  opts: SubscribeOptions,
  stopAfter: (event: GenqEvent) => boolean,
): Unsubscribe {
  const Ctor = opts.EventSource ?? (globalThis as { EventSource?: EventSourceConstructor }).EventSource;
  if (Ctor === undefined) {
    throw new TypeError("genq: no EventSource available; pass one as options.EventSource");
  }
  const baseDelay = opts.retryMs ?? 1000;
  const maxDelay = opts.maxRetryMs ?? 30000;
  let stopped = false;
  let source: EventSourceLike | null = null;
  let timer: ReturnType<typeof setTimeout> | null = null;
  let failures = 0;

  const report = (error: Error): void => {
    if (!stopped) opts.onError?.(error);
  };

  const stop: Unsubscribe = () => {
    stopped = true;
    if (timer !== null) clearTimeout(timer);
    timer = null;
    source?.close();
    source = null;
  };

  const handle = (ev: MessageEventLike): void => {
    if (stopped) return;
    let event: GenqEvent;
    try {
      event = { type: "generation", eventId: ev.lastEventId ?? "", generation: parseGeneration(ev.data) };
    } catch (err) {
      report(err instanceof Error ? err : new Error(String(err)));
      return;
    }
    onEvent(event);
    if (stopAfter(event)) stop();
  };

  let current = token;
  const reopen = (): void => {
    timer = null;
    if (stopped) return;
    if (opts.refreshToken === undefined) return open();
    Promise.resolve()
      .then(opts.refreshToken)
      .then(
        (fresh) => {
          current = fresh;
          open();
        },
        (err: unknown) => {
          report(err instanceof Error ? err : new Error(String(err)));
          schedule();
        },
      );
  };

  const schedule = (): void => {
    if (stopped) return;
    const delay = Math.min(maxDelay, baseDelay * 2 ** Math.min(failures, 16));
    failures += 1;
    timer = setTimeout(reopen, delay);
  };

  const open = (): void => {
    timer = null;
    if (stopped) return;
    const es = new Ctor(urlFor(current));
    source = es;
    es.onopen = () => {
      failures = 0;
    };
    es.onerror = () => {
      if (stopped || source !== es) return;
      report(new Error("genq: event stream interrupted"));
      if (es.readyState === CLOSED) {
        // The browser gave up (an HTTP error, or a closed stream it will not retry): reopen.
        es.close();
        source = null;
        schedule();
      }
    };
    es.addEventListener("generation", handle);
  };

  open();
  return stop;
}

/** Whether a single-generation stream is done after this event. */
export function finalEvent(event: GenqEvent): boolean {
  return isFinal(event.generation.state);
}
