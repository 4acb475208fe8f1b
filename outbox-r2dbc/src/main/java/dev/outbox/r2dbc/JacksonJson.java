package dev.outbox.r2dbc;

import com.fasterxml.jackson.core.JsonProcessingException;
import com.fasterxml.jackson.databind.ObjectMapper;

/**
 * The only class that touches Jackson, so that {@link Message} loads without it: Jackson is an
 * optional dependency, needed only by {@link Message.Builder#json(Object)}.
 */
final class JacksonJson {
  // ObjectMapper is thread-safe once configured; one per JVM, as Jackson recommends.
  private static final ObjectMapper MAPPER = new ObjectMapper();

  private JacksonJson() {}

  static byte[] write(Object value) throws NotSerializable {
    try {
      return MAPPER.writeValueAsBytes(value);
    } catch (JsonProcessingException e) {
      throw new NotSerializable(e.getOriginalMessage());
    }
  }

  /** Jackson's failure, without Jackson types in the signature. */
  static final class NotSerializable extends Exception {
    private static final long serialVersionUID = 1L;

    NotSerializable(String message) {
      super(message, null, false, false);
    }
  }
}
