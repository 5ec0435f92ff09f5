"""Copying an input's audio streams into an enhanced video's file, interleaved with its frames by time.

A truncated input's audio ends on a whole packet: the damaged packets it ends with (the stump of the packet the cut
went through) are left out, since no decoder reads them (PyAV raises, ffmpeg logs "Input buffer exhausted before END
element found").
"""

from __future__ import annotations

from pathlib import Path

import av

#: audio encoder for a container that cannot hold the input's audio codec as it is
AUDIO_FALLBACK_BY_SUFFIX = {".webm": "libopus", ".ogg": "libopus"}


class AudioCopy:
    """The audio streams of an input, copied packet by packet into an output (re-encoded only where the container
    cannot hold the codec), interleaved with the video by time.

    A file cut short (a copy interrupted mid-way) can end inside an audio packet: an MP4 whose index is at the front
    still lists the whole packet, and the demuxer hands over the stump, which no decoder reads. So each copied packet
    is decoded on the side (audio decodes at hundreds of times real time), and packets that fail are held back until
    a good one follows: undecodable packets amid the audio are copied as they are (leaving them out would shift the
    rest of the audio against the video), those at the end of what is copied are left out, so the output's audio
    ends on a whole packet.
    """

    def __init__(self, output: av.container.OutputContainer, source: Path, suffix: str) -> None:
        self._input = av.open(str(source), metadata_errors="ignore")
        self._streams = list(self._input.streams.audio)
        supported = set(output.supported_codecs)
        self._targets: dict[int, tuple[av.AudioStream, bool]] = {}
        for stream in self._streams:
            if stream.codec_context.name in supported:
                self._targets[stream.index] = (output.add_stream_from_template(stream), True)
            else:
                fallback = AUDIO_FALLBACK_BY_SUFFIX.get(suffix, "aac")
                rate = 48000 if fallback == "libopus" else stream.rate
                target = output.add_stream(fallback, rate=rate, layout=stream.layout)
                self._targets[stream.index] = (target, False)
        self._output = output
        self._packets = self._input.demux(self._streams)
        self._pending: av.Packet | None = None
        #: per copied stream: the undecodable packets since its last good one (written if a good one follows)
        self._held: dict[int, list[av.Packet]] = {}
        #: copied streams whose decoder has read a packet: only those are trusted to call a packet damaged (a
        #: decoder that reads nothing, e.g. one missing its setup data, says nothing about the last packet)
        self._decoding: set[int] = set()
        self._done = False
        #: packets left out: the damaged packets a copied stream ended with, and any a re-encoder could not decode
        self.dropped = 0

    def copy_until(self, until: float | None) -> None:
        """Write the audio packets that start before ``until`` seconds (all that are left for None)."""
        while not self._done:
            packet = self._pending or self._next_packet()
            self._pending = None
            if packet is None:
                self._done = True
                return
            if packet.dts is None:  # the demuxer's end-of-stream marker
                continue
            if until is not None and packet.pts is not None and packet.pts * packet.time_base >= until:
                self._pending = packet
                return
            self._write(packet)

    def _next_packet(self) -> av.Packet | None:
        try:
            return next(self._packets, None)
        except av.FFmpegError:  # a truncated input: its audio ends where the file does
            return None

    def _write(self, packet: av.Packet) -> None:
        target, copy = self._targets[packet.stream.index]
        if copy:
            held = self._held.setdefault(packet.stream.index, [])
            if not self._whole(packet):
                held.append(packet)
                return
            for damaged in held:
                self._mux_copy(damaged)
            held.clear()
            self._mux_copy(packet)
            return
        try:
            frames = packet.decode()
        except av.FFmpegError:  # a damaged packet (the stump of a cut file): the encoder goes on with the next
            self.dropped += 1
            return
        for frame in frames:
            frame.pts = None  # the encoder numbers its own samples
            for encoded in target.encode(frame):
                self._output.mux(encoded)

    def _whole(self, packet: av.Packet) -> bool:
        """Whether a copied ``packet`` is whole: not flagged by the demuxer (an MP4 cut inside a packet gives a short,
        flagged one) and read by its stream's decoder (otherwise unused while packets are copied) if that decoder
        reads this stream at all. True where this FFmpeg build has no decoder for the codec: nothing to check with."""
        if packet.is_corrupt:
            return False
        decoder = packet.stream.codec_context
        if decoder is None:
            return True
        try:
            decoder.decode(packet)
        except av.FFmpegError:
            return packet.stream.index not in self._decoding
        self._decoding.add(packet.stream.index)
        return True

    def _mux_copy(self, packet: av.Packet) -> None:
        packet.stream = self._targets[packet.stream.index][0]
        self._output.mux(packet)

    def finish(self, until: float | None) -> None:
        """Copy the audio up to ``until`` seconds (or all of it), leaving out the damaged packets a copied stream
        ends with, and flush the re-encoders."""
        self.copy_until(until)
        self.dropped += sum(len(held) for held in self._held.values())
        self._held.clear()
        for target, copy in self._targets.values():
            if not copy:
                for encoded in target.encode(None):
                    self._output.mux(encoded)
        self.close()

    def close(self) -> None:
        self._input.close()
