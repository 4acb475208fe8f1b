package dev.outbox.r2dbc;

import dev.outbox.r2dbc.internal.Entropy;
import java.math.BigInteger;
import java.time.Instant;
import java.util.Arrays;
import org.jspecify.annotations.Nullable;

/**
 * K-Sortable Unique IDentifier: 4 bytes of big-endian seconds since the KSUID epoch
 * (2014-05-13T16:53:20Z) followed by 16 random bytes, written as exactly 27 base62 characters.
 * The string form sorts by time (to the second), then randomly.
 *
 * <pre>{@code
 * Ksuid id = Ksuid.generate();
 * String text = id.toString();            // e.g. "0ujtsYcgvSTl8PAuAdqWYSMnLOv"
 * Ksuid same = Ksuid.parse(text);         // InvalidMessageException when malformed
 * }</pre>
 *
 * <p>Immutable and thread-safe.
 */
public final class Ksuid implements Comparable<Ksuid> {
  /** Seconds from the Unix epoch to the KSUID epoch. */
  public static final long EPOCH_SECONDS = 1_400_000_000L;

  /** Length of the string form. */
  public static final int STRING_LENGTH = 27;

  private static final int BYTES = 20;
  private static final int PAYLOAD_BYTES = 16;
  private static final String ALPHABET =
      "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
  private static final BigInteger BASE = BigInteger.valueOf(62);
  private static final BigInteger MAX = BigInteger.ONE.shiftLeft(BYTES * 8).subtract(BigInteger.ONE);

  private final byte[] bytes;
  private final String text;

  private Ksuid(byte[] bytes, String text) {
    this.bytes = bytes;
    this.text = text;
  }

  /** A new KSUID for the current second. */
  public static Ksuid generate() {
    return generate(Instant.now());
  }

  /** A new KSUID for the given time (truncated to the second), with a fresh random payload. */
  public static Ksuid generate(Instant time) {
    long seconds = time.getEpochSecond() - EPOCH_SECONDS;
    if (seconds < 0 || seconds > 0xFFFF_FFFFL) {
      throw new InvalidMessageException(
          "Ksuid time must be between 2014-05-13T16:53:20Z and 2150-06-19T23:21:35Z, got " + time);
    }
    byte[] b = new byte[BYTES];
    b[0] = (byte) (seconds >>> 24);
    b[1] = (byte) (seconds >>> 16);
    b[2] = (byte) (seconds >>> 8);
    b[3] = (byte) seconds;
    byte[] payload = new byte[PAYLOAD_BYTES];
    Entropy.nextBytes(payload);
    System.arraycopy(payload, 0, b, 4, PAYLOAD_BYTES);
    return fromBytes(b);
  }

  /** The KSUID with exactly these 20 bytes. */
  public static Ksuid fromBytes(byte[] bytes) {
    if (bytes.length != BYTES) {
      throw new InvalidMessageException(
          "Ksuid needs exactly " + BYTES + " bytes, got " + bytes.length);
    }
    byte[] copy = bytes.clone();
    return new Ksuid(copy, encode(copy));
  }

  /**
   * Parses the 27-character base62 form.
   *
   * @throws InvalidMessageException when the text has the wrong length, a character outside
   *     {@code [0-9A-Za-z]}, or a value above 2^160-1
   */
  public static Ksuid parse(String text) {
    if (text.length() != STRING_LENGTH) {
      throw new InvalidMessageException(
          "Ksuid must be " + STRING_LENGTH + " base62 characters, got " + text.length()
              + " in '" + text + "'");
    }
    BigInteger value = BigInteger.ZERO;
    for (int i = 0; i < STRING_LENGTH; i++) {
      int digit = ALPHABET.indexOf(text.charAt(i));
      if (digit < 0) {
        throw new InvalidMessageException(
            "Ksuid has a character outside [0-9A-Za-z] at index " + i + " in '" + text + "'");
      }
      value = value.multiply(BASE).add(BigInteger.valueOf(digit));
    }
    if (value.compareTo(MAX) > 0) {
      throw new InvalidMessageException("Ksuid '" + text + "' is above the largest 160-bit value");
    }
    byte[] raw = value.toByteArray(); // big-endian, possibly with a sign byte or shorter
    byte[] b = new byte[BYTES];
    int copy = Math.min(raw.length, BYTES);
    System.arraycopy(raw, raw.length - copy, b, BYTES - copy, copy);
    return new Ksuid(b, text);
  }

  private static String encode(byte[] b) {
    BigInteger value = new BigInteger(1, b);
    char[] out = new char[STRING_LENGTH];
    Arrays.fill(out, '0');
    for (int i = STRING_LENGTH - 1; i >= 0 && value.signum() > 0; i--) {
      BigInteger[] qr = value.divideAndRemainder(BASE);
      out[i] = ALPHABET.charAt(qr[1].intValue());
      value = qr[0];
    }
    return new String(out);
  }

  /** The time component, to the second. */
  public Instant time() {
    long seconds =
        ((bytes[0] & 0xffL) << 24) | ((bytes[1] & 0xffL) << 16) | ((bytes[2] & 0xffL) << 8)
            | (bytes[3] & 0xffL);
    return Instant.ofEpochSecond(EPOCH_SECONDS + seconds);
  }

  /** A copy of the 20 raw bytes. */
  public byte[] toBytes() {
    return bytes.clone();
  }

  /** The 27-character base62 form. */
  @Override
  public String toString() {
    return text;
  }

  @Override
  public int compareTo(Ksuid other) {
    return Arrays.compareUnsigned(bytes, other.bytes);
  }

  @Override
  public boolean equals(@Nullable Object o) {
    return o instanceof Ksuid && Arrays.equals(bytes, ((Ksuid) o).bytes);
  }

  @Override
  public int hashCode() {
    return Arrays.hashCode(bytes);
  }
}
