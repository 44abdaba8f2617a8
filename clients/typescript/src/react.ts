// The React entry point (`@genq/client/react`), separate so non-React users never load
// React: `useGeneration` follows one generation over its event stream and re-renders on
// every change, ending after a final state.

import { useEffect, useRef, useState } from "react";
import { subscribeGeneration } from "./browser.js";
import type { SubscribeOptions } from "./events.js";
import { isFinal, type Generation } from "./types.js";

/** What `useGeneration` returns. */
export interface GenerationStatus {
  /** The latest state seen, null before the first event. */
  generation: Generation | null;
  /** The last connection problem (the hook keeps reconnecting), null once an event arrives. */
  error: Error | null;
  /** Whether the generation reached a final state. */
  done: boolean;
}

/**
 * Follows generation `id` (skipped while `id` or `token` is null, e.g. before the backend
 * answered). Resubscribes when the base URL, token or id changes.
 */
export function useGeneration(
  baseUrl: string,
  token: string | null,
  id: string | null,
  opts: SubscribeOptions = {},
): GenerationStatus {
  const [status, setStatus] = useState<GenerationStatus>({ generation: null, error: null, done: false });
  const { EventSource, retryMs, maxRetryMs } = opts;
  // The latest refresher, without resubscribing when the caller passes a new closure.
  const refresher = useRef(opts.refreshToken);
  refresher.current = opts.refreshToken;
  const canRefresh = opts.refreshToken !== undefined;
  useEffect(() => {
    setStatus({ generation: null, error: null, done: false });
    if (token === null || id === null) return undefined;
    const options: SubscribeOptions = {
      onError: (error) => setStatus((s) => ({ ...s, error })),
    };
    if (EventSource !== undefined) options.EventSource = EventSource;
    if (retryMs !== undefined) options.retryMs = retryMs;
    if (maxRetryMs !== undefined) options.maxRetryMs = maxRetryMs;
    if (canRefresh) options.refreshToken = () => (refresher.current ? refresher.current() : token);
    return subscribeGeneration(
      baseUrl,
      token,
      id,
      (event) => setStatus({ generation: event.generation, error: null, done: isFinal(event.generation.state) }),
      options,
    );
  }, [baseUrl, token, id, EventSource, retryMs, maxRetryMs, canRefresh]);
  return status;
}
