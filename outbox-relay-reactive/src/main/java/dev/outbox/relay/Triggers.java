package dev.outbox.relay;

import java.net.InetSocketAddress;
import java.nio.file.Path;
import java.time.Duration;
import org.jspecify.annotations.Nullable;

/**
 * What wakes a relay besides its poll interval, from {@link RelayOptions.Builder#listen} and the
 * {@code heartbeat*} options. Polling always runs as the fallback: a lost notification or
 * heartbeat delays a batch by at most the poll interval, never strands it.
 *
 * @param listenChannel LISTEN/NOTIFY channel, or {@code null}
 * @param tcp heartbeat TCP address, or {@code null}
 * @param udp heartbeat UDP address, or {@code null}
 * @param unixSocket heartbeat UNIX-domain socket path, or {@code null}
 * @param debounce external wake-ups within this window count once
 */
public record Triggers(@Nullable String listenChannel, @Nullable InetSocketAddress tcp,
    @Nullable InetSocketAddress udp, @Nullable Path unixSocket, Duration debounce) {

  /** Whether any trigger besides polling is configured. */
  public boolean any() {
    return listenChannel != null || tcp != null || udp != null || unixSocket != null;
  }
}
