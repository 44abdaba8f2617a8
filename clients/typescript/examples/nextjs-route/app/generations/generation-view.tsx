// The browser side: a React component following one generation with useGeneration, and the
// plain subscribe helpers for non-React code.
import { useGeneration } from "@genq/client/react";
import { subscribeGeneration, subscribeUser, type GenqEvent } from "@genq/client/browser";

const EVENTS_URL = "https://genq.example.com";

export function GenerationView(props: { id: string; token: string }) {
  const { generation, error, done } = useGeneration(EVENTS_URL, props.token, props.id, {
    refreshToken: async () => ((await (await fetch(`/api/generations/${props.id}/token`)).json()) as { token: string }).token,
  });
  if (error && !generation) return <p>Reconnecting…</p>;
  if (!generation) return <p>Waiting…</p>;
  if (done && generation.state === "succeeded") return <video src={generation.output[0]?.url} controls />;
  if (done) return <p>Failed: {generation.error?.message ?? generation.state}</p>;
  return <progress value={generation.progress?.percent ?? undefined} max={100} />;
}

export function followAll(token: string, onChange: (e: GenqEvent) => void): () => void {
  const stopOne = subscribeGeneration(EVENTS_URL, token, "6f1c3a9e-0000-4000-8000-000000000001", onChange, { retryMs: 500 });
  const stopAll = subscribeUser(EVENTS_URL, token, (e) => onChange(e));
  return () => {
    stopOne();
    stopAll();
  };
}
