// Where the audio comes from: the microphone (through capture-worklet.js) or a file, each
// handing float32 frames to a callback.

export const FRAME_MS = 40; // audio per binary frame

// Browsers give the microphone (and AudioWorklet) only to secure contexts: https:// pages and
// pages on localhost. A file still streams from a plain http:// page.
export const NO_MICROPHONE = "the microphone is only available to pages served over " +
  `https:// or from localhost, and this page is ${location.origin}; stream a file instead, ` +
  "or open the page through https";

export function microphoneAllowed() {
  return window.isSecureContext && !!(navigator.mediaDevices &&
    navigator.mediaDevices.getUserMedia);
}

/** The microphone, through an AudioWorklet that hands over ~40 ms float32 frames (mono). */
export async function startMicrophone(ctx, onFrame) {
  if (!microphoneAllowed()) throw new Error(NO_MICROPHONE);
  const stream = await navigator.mediaDevices.getUserMedia({
    audio: { channelCount: 1, echoCancellation: false, noiseSuppression: false,
             autoGainControl: false },
  });
  await ctx.audioWorklet.addModule(new URL("capture-worklet.js", import.meta.url));
  const input = ctx.createMediaStreamSource(stream);
  const node = new AudioWorkletNode(ctx, "capture-processor", {
    numberOfInputs: 1, numberOfOutputs: 1, channelCount: 1, channelCountMode: "explicit",
    processorOptions: { frameMs: FRAME_MS },
  });
  // A silent path to the destination keeps the node rendering without playing the voice back.
  const mute = new GainNode(ctx, { gain: 0 });
  let flushed = null;
  let stopped = false;
  node.port.onmessage = (event) => {
    if (event.data.samples) onFrame(event.data.samples);
    if (event.data.flushed && flushed) flushed();
  };
  input.connect(node).connect(mute).connect(ctx.destination);
  return {
    channels: 1,
    label: stream.getAudioTracks()[0].label || "microphone",
    async stop() {
      if (stopped) return;
      stopped = true;
      // Take the samples still in the worklet before letting go of the microphone.
      await new Promise((resolve) => {
        flushed = resolve;
        node.port.postMessage("flush");
        setTimeout(resolve, 500);
      });
      node.port.postMessage("stop");
      stream.getTracks().forEach((track) => track.stop());
      input.disconnect();
      node.disconnect();
    },
  };
}

/** A file, decoded at the context's rate and sent at real time, interleaved float32. */
export async function startFile(ctx, file, onFrame, onEnd) {
  const audio = await ctx.decodeAudioData(await file.arrayBuffer());
  const channels = Math.min(audio.numberOfChannels, 8);
  const data = Array.from({ length: channels }, (_, c) => audio.getChannelData(c));
  const frame = Math.round((audio.sampleRate * FRAME_MS) / 1000);
  const t0 = performance.now();
  let sent = 0;
  let timer = null;
  let done = false;
  const tick = () => {
    // Send what real time has reached, one frame ahead; timers drift, the clock does not.
    const due = Math.min(audio.length,
      Math.ceil(((performance.now() - t0) / 1000) * audio.sampleRate) + frame);
    while (sent < due) {
      const n = Math.min(frame, due - sent);
      const out = new Float32Array(n * channels);
      for (let i = 0; i < n; i++) {
        for (let c = 0; c < channels; c++) out[i * channels + c] = data[c][sent + i];
      }
      sent += n;
      onFrame(out);
    }
    if (sent >= audio.length) {
      done = true;
      onEnd();
    } else {
      timer = setTimeout(tick, FRAME_MS / 2);
    }
  };
  // The first frames go out once the caller has sent 'start'.
  timer = setTimeout(tick, 0);
  return {
    channels,
    label: `${file.name} (${audio.duration.toFixed(1)} s, ${channels} ch)`,
    async stop() {
      if (!done) clearTimeout(timer);
      done = true;
    },
  };
}
