package dev.outbox.r2dbc;

import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.assertThatThrownBy;

import java.time.Instant;
import java.util.Map;
import org.junit.jupiter.api.Test;

class MessageTest {

  @Test
  void defaultsAreAppliedPerBuild() {
    Message.Builder builder = Message.builder().stream("orders").data(new byte[] {1});
    Instant before = Instant.now();
    Message a = builder.build();
    Message b = builder.build();
    assertThat(Ksuid.parse(a.id())).isNotNull();
    assertThat(a.id()).isNotEqualTo(b.id());
    assertThat(a.time()).isBetween(before, Instant.now());
    assertThat(a.key()).isEmpty();
    assertThat(a.contentType()).isEqualTo(Message.DEFAULT_CONTENT_TYPE);
    assertThat(a.headers()).isEmpty();
  }

  @Test
  void isImmutable() {
    byte[] data = {1, 2, 3};
    Message m = Message.builder().stream("s").data(data).header("a", "b").build();
    data[0] = 9;
    m.data()[1] = 9;
    assertThat(m.data()).containsExactly(1, 2, 3);
    assertThatThrownBy(() -> m.headers().put("x", "y"))
        .isInstanceOf(UnsupportedOperationException.class);
    assertThat(m.toBuilder().build()).isEqualTo(m);
  }

  @Test
  void missingStreamIsNamed() {
    assertThatThrownBy(() -> Message.builder().data(new byte[0]).build())
        .isInstanceOf(InvalidMessageException.class).hasMessageContaining("stream");
    assertThatThrownBy(() -> Message.builder().stream("  ").data(new byte[0]).build())
        .isInstanceOf(InvalidMessageException.class).hasMessageContaining("stream");
  }

  @Test
  void timeBefore1970IsNamed() {
    assertThatThrownBy(() -> Message.builder().stream("s").data(new byte[0])
            .time(Instant.EPOCH.minusMillis(1)).build())
        .isInstanceOf(InvalidMessageException.class).hasMessageContaining("1970");
    assertThat(Message.builder().stream("s").data(new byte[0]).time(Instant.EPOCH).build().time())
        .isEqualTo(Instant.EPOCH);
  }

  @Test
  void nullDataIsNamed() {
    assertThatThrownBy(() -> Message.builder().stream("s").build())
        .isInstanceOf(InvalidMessageException.class).hasMessageContaining("data");
  }

  @Test
  void nullHeaderNameOrValueIsNamed() {
    assertThatThrownBy(() -> Message.builder().stream("s").data(new byte[0])
            .header(null, "v").build())
        .isInstanceOf(InvalidMessageException.class).hasMessageContaining("header name");
    assertThatThrownBy(() -> Message.builder().stream("s").data(new byte[0])
            .header("h", null).build())
        .isInstanceOf(InvalidMessageException.class).hasMessageContaining("header 'h'");
  }

  @Test
  void reservedHeadersEmptyKeyAndBlankIdAreRejected() {
    assertThatThrownBy(() -> Message.builder().stream("s").data(new byte[0])
            .headers(Map.of("message_id", "x")).build())
        .isInstanceOf(InvalidMessageException.class).hasMessageContaining("reserved");
    assertThatThrownBy(() -> Message.builder().stream("s").data(new byte[0]).key("").build())
        .isInstanceOf(InvalidMessageException.class).hasMessageContaining("key");
    assertThatThrownBy(() -> Message.builder().stream("s").data(new byte[0]).id(" ").build())
        .isInstanceOf(InvalidMessageException.class).hasMessageContaining("id");
  }
}
