package dev.outbox.r2dbc;

import com.google.protobuf.MessageLite;
import java.nio.charset.StandardCharsets;
import java.time.Instant;
import java.util.Arrays;
import java.util.Collections;
import java.util.LinkedHashMap;
import java.util.Map;
import java.util.Objects;
import java.util.Optional;
import org.jspecify.annotations.Nullable;

/**
 * One message to publish: an immutable value, validated when built.
 *
 * <pre>{@code
 * Message placed = Message.builder()
 *     .stream("orders")                 // the Kafka topic
 *     .key(order.id())                  // partition key; omit for none
 *     .header("schema", "OrderPlaced/v1")
 *     .contentType("application/json")
 *     .data(json)                        // byte[]; or data(String), json(Object), protobuf(...)
 *     .build();                          // id = new KSUID, time = now
 * }</pre>
 *
 * <p>Payload conveniences set a content type unless {@link Builder#contentType} is given
 * (before or after): {@link Builder#data(String)} UTF-8 text ({@value #TEXT_CONTENT_TYPE}),
 * {@link Builder#json(Object)} JSON through Jackson ({@value #JSON_CONTENT_TYPE}; Jackson 2 is an
 * optional dependency the application adds), {@link Builder#protobuf(MessageLite)} a protobuf
 * message's bytes ({@value #PROTOBUF_CONTENT_TYPE}).
 *
 * <p>Rules, checked by {@link Builder#build()} with an {@link InvalidMessageException} that names
 * the field: {@code id} and {@code stream} are non-blank; {@code key}, when present, is not
 * empty (the wire format cannot tell an empty key from none); {@code data} is non-null (empty is
 * fine); header names and values are non-null, and the names {@value #MESSAGE_ID_HEADER} and
 * {@value #CONTENT_TYPE_HEADER} are reserved for the relay.
 *
 * <p>Immutable and thread-safe: {@link #data()} returns a copy.
 */
public final class Message {
  /** Kafka header carrying {@link #id()}; consumers deduplicate on it. */
  public static final String MESSAGE_ID_HEADER = "message_id";

  /** Kafka header carrying {@link #contentType()}. */
  public static final String CONTENT_TYPE_HEADER = "content_type";

  /** Content type used when none is given. */
  public static final String DEFAULT_CONTENT_TYPE = "application/octet-stream";

  /** Content type set by {@link Builder#data(String)} unless one is given. */
  public static final String TEXT_CONTENT_TYPE = "text/plain; charset=utf-8";

  /** Content type set by {@link Builder#json(Object)} unless one is given. */
  public static final String JSON_CONTENT_TYPE = "application/json";

  /** Content type set by {@link Builder#protobuf(MessageLite)} unless one is given. */
  public static final String PROTOBUF_CONTENT_TYPE = "application/x-protobuf";

  private final String id;
  private final String stream;
  private final @Nullable String key;
  private final Map<String, String> headers;
  private final String contentType;
  private final byte[] data;
  private final Instant time;

  private Message(String id, String stream, @Nullable String key, Map<String, String> headers,
      String contentType, byte[] data, Instant time) {
    this.id = id;
    this.stream = stream;
    this.key = key;
    this.headers = Collections.unmodifiableMap(new LinkedHashMap<>(headers));
    this.contentType = contentType;
    this.data = data;
    this.time = time;
  }

  public static Builder builder() {
    return new Builder();
  }

  /**
   * This message with {@code added} headers after its own, sharing the payload (never modified);
   * for the writer's {@link ContextHeaders}. The names and values were checked by the caller.
   */
  Message withAddedHeaders(Map<String, String> added) {
    Map<String, String> all = new LinkedHashMap<>(headers);
    all.putAll(added);
    return new Message(id, stream, key, all, contentType, data, time);
  }

  /** A builder pre-filled with this message's fields, for a modified copy. */
  public Builder toBuilder() {
    Builder b = new Builder().id(id).stream(stream).contentType(contentType).data(data).time(time);
    b.key = key;
    b.headers.putAll(headers);
    return b;
  }

  public String id() {
    return id;
  }

  /** The stream (Kafka topic) the message is published to. */
  public String stream() {
    return stream;
  }

  /** The partition key, absent when the message has none. */
  public Optional<String> key() {
    return Optional.ofNullable(key);
  }

  /** User headers in insertion order; unmodifiable. */
  public Map<String, String> headers() {
    return headers;
  }

  public String contentType() {
    return contentType;
  }

  /** A copy of the payload. */
  public byte[] data() {
    return data.clone();
  }

  /** Payload length in bytes, without copying. */
  public int dataLength() {
    return data.length;
  }

  public Instant time() {
    return time;
  }

  @Override
  public boolean equals(@Nullable Object o) {
    if (this == o) {
      return true;
    }
    if (!(o instanceof Message)) {
      return false;
    }
    Message m = (Message) o;
    return id.equals(m.id) && stream.equals(m.stream) && Objects.equals(key, m.key)
        && headers.equals(m.headers) && contentType.equals(m.contentType)
        && Arrays.equals(data, m.data) && time.equals(m.time);
  }

  @Override
  public int hashCode() {
    return Objects.hash(id, stream, key, headers, contentType, Arrays.hashCode(data), time);
  }

  @Override
  public String toString() {
    return "Message{id=" + id + ", stream=" + stream + ", key=" + key + ", headers=" + headers
        + ", contentType=" + contentType + ", data=" + data.length + " bytes, time=" + time + "}";
  }

  /** Collects fields; {@link #build()} validates and applies defaults. Not thread-safe. */
  public static final class Builder {
    private @Nullable String id;
    private @Nullable String stream;
    private @Nullable String key;
    private final Map<String, String> headers = new LinkedHashMap<>();
    private @Nullable String contentType = DEFAULT_CONTENT_TYPE;
    // Whether contentType(...) was called: an explicit type wins over a payload method's default.
    private boolean contentTypeGiven;
    // Never shared with callers (data(byte[]) copies, the other payload methods make their own),
    // so build() hands it to the message as it is.
    private byte @Nullable [] data;
    private @Nullable String invalidData;
    private @Nullable Instant time;
    private @Nullable String invalidHeader;

    private Builder() {}

    /** Defaults to a new {@link Ksuid}. */
    public Builder id(@Nullable String id) {
      this.id = id;
      return this;
    }

    public Builder stream(@Nullable String stream) {
      this.stream = stream;
      return this;
    }

    /** Partition key; {@code null} means none. */
    public Builder key(@Nullable String key) {
      this.key = key;
      return this;
    }

    public Builder header(@Nullable String name, @Nullable String value) {
      if (name == null || value == null) {
        invalidHeader =
            name == null ? "a header name is null" : "the value of header '" + name + "' is null";
        return this;
      }
      headers.put(name, value);
      return this;
    }

    public Builder headers(Map<String, String> headers) {
      headers.forEach(this::header);
      return this;
    }

    /** Defaults to {@value Message#DEFAULT_CONTENT_TYPE}. */
    public Builder contentType(@Nullable String contentType) {
      this.contentType = contentType;
      this.contentTypeGiven = true;
      return this;
    }

    /**
     * The payload; copied. Content type {@value Message#DEFAULT_CONTENT_TYPE} unless {@link
     * #contentType} is given.
     */
    public Builder data(byte @Nullable [] data) {
      return payload(data == null ? null : data.clone(), DEFAULT_CONTENT_TYPE, null);
    }

    /** The payload, never copied: the caller gives it up (a decoder's fresh array). */
    Builder ownedData(byte[] data) {
      return payload(data, DEFAULT_CONTENT_TYPE, null);
    }

    /**
     * The payload as UTF-8 text; content type {@value Message#TEXT_CONTENT_TYPE} unless {@link
     * #contentType} is given (before or after).
     */
    public Builder data(@Nullable String text) {
      return payload(text == null ? null : text.getBytes(StandardCharsets.UTF_8),
          TEXT_CONTENT_TYPE, null);
    }

    /**
     * The payload as {@code value} serialized to JSON by Jackson 2 ({@code
     * com.fasterxml.jackson.core:jackson-databind}, an optional dependency: add it yourself), with
     * a shared default {@code ObjectMapper} (no extra modules; for your own mapper use {@code
     * data(mapper.writeValueAsBytes(value)).contentType(Message.JSON_CONTENT_TYPE)}). Content type
     * {@value Message#JSON_CONTENT_TYPE} unless {@link #contentType} is given.
     *
     * <p>A value Jackson cannot serialize makes {@link #build()} throw {@link
     * InvalidMessageException} naming its class; Jackson missing from the classpath throws {@link
     * InvalidConfigurationException} here.
     */
    public Builder json(@Nullable Object value) {
      if (value == null) {
        return payload(null, JSON_CONTENT_TYPE, "Message json value is null");
      }
      try {
        return payload(JacksonJson.write(value), JSON_CONTENT_TYPE, null);
      } catch (NoClassDefFoundError e) {
        throw new InvalidConfigurationException("Message.Builder.json needs Jackson 2 on the "
            + "classpath: add com.fasterxml.jackson.core:jackson-databind (missing: "
            + e.getMessage() + ")");
      } catch (JacksonJson.NotSerializable e) {
        return payload(null, JSON_CONTENT_TYPE, "Message json value of " + value.getClass().getName()
            + " cannot be serialized by Jackson: " + e.getMessage());
      }
    }

    /**
     * The payload as a protobuf message's bytes ({@code toByteArray()}); content type {@value
     * Message#PROTOBUF_CONTENT_TYPE} unless {@link #contentType} is given. Name the message type
     * in a header if consumers need it.
     */
    public Builder protobuf(@Nullable MessageLite message) {
      return payload(message == null ? null : message.toByteArray(), PROTOBUF_CONTENT_TYPE,
          message == null ? "Message protobuf value is null" : null);
    }

    private Builder payload(byte @Nullable [] bytes, String impliedContentType,
        @Nullable String invalid) {
      this.data = bytes;
      this.invalidData = invalid;
      if (!contentTypeGiven) {
        this.contentType = impliedContentType;
      }
      return this;
    }

    /** Defaults to now. */
    public Builder time(@Nullable Instant time) {
      this.time = time;
      return this;
    }

    /**
     * Validates and builds; may be called again for further messages (each gets a new id).
     *
     * @throws InvalidMessageException naming the first invalid field
     */
    public Message build() {
      if (invalidHeader != null) {
        throw new InvalidMessageException("Message headers: " + invalidHeader);
      }
      if (stream == null || stream.isBlank()) {
        throw new InvalidMessageException("Message stream is required (the Kafka topic), got "
            + (stream == null ? "null" : "'" + stream + "'"));
      }
      if (id != null && id.isBlank()) {
        throw new InvalidMessageException("Message id must not be blank; omit it for a new KSUID");
      }
      if (key != null && key.isEmpty()) {
        throw new InvalidMessageException(
            "Message key must not be empty; use null for a message without a key");
      }
      if (invalidData != null) {
        throw new InvalidMessageException(invalidData);
      }
      if (data == null) {
        throw new InvalidMessageException("Message data is required (use an empty array for none)");
      }
      if (contentType == null) {
        throw new InvalidMessageException("Message contentType must not be null");
      }
      if (headers.containsKey(MESSAGE_ID_HEADER) || headers.containsKey(CONTENT_TYPE_HEADER)) {
        throw new InvalidMessageException("Message headers '" + MESSAGE_ID_HEADER + "' and '"
            + CONTENT_TYPE_HEADER + "' are reserved: the relay sets them from id and contentType");
      }
      if (time != null && time.isBefore(Instant.EPOCH)) {
        // A Kafka record timestamp cannot be negative: the producer would reject the record.
        throw new InvalidMessageException("Message time must not be before 1970-01-01, got "
            + time);
      }
      // Defaults are computed per build() so a reused builder never repeats an id.
      return new Message(id != null ? id : Ksuid.generate().toString(), stream, key, headers,
          contentType, data, time != null ? time : Instant.now());
    }
  }
}
