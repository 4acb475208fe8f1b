package dev.outbox.r2dbc.internal;

import java.security.NoSuchAlgorithmException;
import java.security.SecureRandom;
import java.util.UUID;

/**
 * Internal: not part of the public API. Random bytes for ids and lease tokens without blocking a Reactor thread.
 *
 * <p>The platform default {@code SecureRandom} (and so {@link UUID#randomUUID()}) reads
 * {@code /dev/urandom} through a {@code FileInputStream} on every call, which BlockHound
 * rightly reports on non-blocking threads. A DRBG reads the OS entropy source once, when it is
 * seeded in {@link #seeded()}, and is pure computation afterwards. The bundled BlockHound
 * integration allows that one seeding call. {@code SecureRandom} is thread-safe.
 */
public final class Entropy {
  private static final SecureRandom RANDOM = seeded();

  private Entropy() {}

  public static SecureRandom seeded() {
    SecureRandom random;
    try {
      random = SecureRandom.getInstance("DRBG");
    } catch (NoSuchAlgorithmException e) {
      random = new SecureRandom();
    }
    random.nextBytes(new byte[1]); // forces the one-time seeding here, not on a later hot path
    return random;
  }

  public static void nextBytes(byte[] bytes) {
    RANDOM.nextBytes(bytes);
  }

  public static UUID randomUuid() {
    byte[] b = new byte[16];
    RANDOM.nextBytes(b);
    b[6] = (byte) ((b[6] & 0x0f) | 0x40); // version 4
    b[8] = (byte) ((b[8] & 0x3f) | 0x80); // IETF variant
    long msb = 0;
    long lsb = 0;
    for (int i = 0; i < 8; i++) {
      msb = (msb << 8) | (b[i] & 0xff);
      lsb = (lsb << 8) | (b[i + 8] & 0xff);
    }
    return new UUID(msb, lsb);
  }
}
