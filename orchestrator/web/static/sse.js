// A job's stream read with fetch() (EventSource cannot send the Authorization header) and
// parsed here: replay, then live; resumed with Last-Event-ID after a drop, nothing lost.
import { authFetch } from "./api.js";

const RETRY_MS = 1000;

// Calls onEvents(list) with each chunk's events, onSamples(list) with its resource samples
// (SSE type `sample`: not log lines), and onEnd(end) once the job has ended.
// Resolves when the stream is done or `signal` aborts.
export async function follow(jobId, { onEvents, onSamples, onEnd, onState }, signal) {
  let lastId = "";
  let pendingId = null;
  let finished = false;
  while (!finished && !signal.aborted) {
    try {
      const headers = lastId ? { "Last-Event-ID": lastId } : {};
      const response = await authFetch(`/v1/jobs/${encodeURIComponent(jobId)}/stream`, {
        headers,
        signal,
        cache: "no-store",
      });
      if (response.status >= 400 && response.status < 500) {
        const fatal = new Error(`the stream answered ${response.status}`);
        fatal.fatal = true;
        throw fatal;
      }
      if (!response.ok) throw new Error(`the stream answered ${response.status}`);
      onState && onState("live");
      pendingId = null;
      const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
      let buffer = "";
      let data = [];
      let type = "";
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        buffer += value;
        const events = [];
        const samples = [];
        let start = 0;
        for (;;) {
          const nl = buffer.indexOf("\n", start);
          if (nl < 0) break;
          let line = buffer.slice(start, nl);
          start = nl + 1;
          if (line.endsWith("\r")) line = line.slice(0, -1);
          if (line === "") {
            // A blank line dispatches what the lines before it said; only then does its id
            // count, so a resume never skips an event that was cut short.
            if (pendingId !== null) lastId = pendingId;
            pendingId = null;
            if (data.length) {
              const text = data.join("\n");
              if (type === "end") {
                finished = true;
                onEnd(JSON.parse(text));
              } else if (type === "sample") {
                samples.push(JSON.parse(text));
              } else if (text !== "[DONE]") {
                events.push(JSON.parse(text));
              } else {
                finished = true;
              }
            }
            data = [];
            type = "";
          } else if (line.startsWith(":")) {
            // a keep-alive comment
          } else {
            const colon = line.indexOf(":");
            const field = colon < 0 ? line : line.slice(0, colon);
            let val = colon < 0 ? "" : line.slice(colon + 1);
            if (val.startsWith(" ")) val = val.slice(1);
            if (field === "data") data.push(val);
            else if (field === "id") pendingId = val;
            else if (field === "event") type = val;
          }
        }
        buffer = buffer.slice(start);
        if (events.length) onEvents(events);
        if (samples.length && onSamples) onSamples(samples);
      }
    } catch (error) {
      if (signal.aborted) return;
      if (error instanceof SyntaxError || error.fatal) throw error;
    }
    if (!finished && !signal.aborted) {
      onState && onState("reconnecting");
      await new Promise((resolve) => setTimeout(resolve, RETRY_MS));
    }
  }
}
