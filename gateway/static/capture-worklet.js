// Runs on the audio rendering thread. The browser hands process() 128 frames at a time; posting
// each block to the page would mean ~375 messages a second at 48 kHz, so the worklet gathers
// them into frames of about 40 ms and transfers each buffer (no copy) to the page, which sends
// it to the gateway as float32 samples. Only the first input channel is kept (mono).
class CaptureProcessor extends AudioWorkletProcessor {
  constructor(options) {
    super();
    const ms = (options.processorOptions && options.processorOptions.frameMs) || 40;
    this.size = Math.max(128, Math.round((sampleRate * ms) / 1000));
    this.buffer = new Float32Array(this.size);
    this.filled = 0;
    this.running = true;
    this.port.onmessage = (event) => {
      if (event.data === "flush") {
        this.send();
        this.port.postMessage({ flushed: true });
      } else if (event.data === "stop") {
        this.running = false;
      }
    };
  }

  send() {
    if (this.filled === 0) return;
    const out = this.buffer.slice(0, this.filled);
    this.port.postMessage({ samples: out }, [out.buffer]);
    this.filled = 0;
  }

  process(inputs) {
    const channel = inputs[0] && inputs[0][0];
    if (channel) {
      let offset = 0;
      while (offset < channel.length) {
        const n = Math.min(channel.length - offset, this.size - this.filled);
        this.buffer.set(channel.subarray(offset, offset + n), this.filled);
        this.filled += n;
        offset += n;
        if (this.filled === this.size) this.send();
      }
    }
    return this.running;
  }
}

registerProcessor("capture-processor", CaptureProcessor);
