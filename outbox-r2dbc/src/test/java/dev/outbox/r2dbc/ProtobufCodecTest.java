package dev.outbox.r2dbc;

import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.assertThatThrownBy;

import com.google.protobuf.ByteString;
import com.google.protobuf.Timestamp;
import dev.outbox.r2dbc.internal.proto.TransportMessage;
import dev.outbox.r2dbc.internal.proto.TransportMessageBatch;
import java.nio.charset.StandardCharsets;
import java.time.Instant;
import java.util.List;
import org.junit.jupiter.api.Test;

class ProtobufCodecTest {
  private final Codec codec = Codec.protobuf();

  @Test
  void everyFieldRoundTrips() {
    Message withKey = Message.builder()
        .stream("orders").key("order-42")
        .header("schema", "OrderPlaced/v1").header("empty", "").header("ünï", "çødé")
        .contentType("application/json")
        .data("{\"id\":42}".getBytes(StandardCharsets.UTF_8))
        .time(Instant.parse("2026-11-26T07:05:04.123456789Z"))
        .build();
    Message noKeyEmptyData = Message.builder().stream("audit").data(new byte[0])
        .time(Instant.ofEpochSecond(0, 1)).build();

    List<Message> decoded = codec.decode(codec.encode(List.of(withKey, noKeyEmptyData)));

    assertThat(decoded).containsExactly(withKey, noKeyEmptyData);
    assertThat(decoded.get(0).time().getNano()).isEqualTo(123_456_789);
    assertThat(decoded.get(1).key()).isEmpty();
    assertThat(decoded.get(1).dataLength()).isZero();
  }

  @Test
  void codecBytesParseWithGeneratedClasses() throws Exception {
    Message m = Message.builder().id("abc").stream("s").key("k").header("h", "v")
        .contentType("text/plain").data(new byte[] {7}).time(Instant.ofEpochSecond(10, 20)).build();
    TransportMessageBatch batch = TransportMessageBatch.parseFrom(codec.encode(List.of(m)));
    TransportMessage t = batch.getMessages(0);
    assertThat(batch.getMessagesCount()).isEqualTo(1);
    assertThat(t.getMessageId()).isEqualTo("abc");
    assertThat(t.getStreamName()).isEqualTo("s");
    assertThat(t.getStreamKey()).isEqualTo("k");
    assertThat(t.getHeadersMap()).containsExactly(java.util.Map.entry("h", "v"));
    assertThat(t.getContentType()).isEqualTo("text/plain");
    assertThat(t.getData().toByteArray()).containsExactly(7);
    assertThat(t.getTime().getSeconds()).isEqualTo(10);
    assertThat(t.getTime().getNanos()).isEqualTo(20);
  }

  @Test
  void generatedBytesDecodeWithCodec() {
    byte[] raw = TransportMessageBatch.newBuilder()
        .addMessages(TransportMessage.newBuilder().setMessageId("go-1").setStreamName("t")
            .putHeaders("x", "y").setContentType("c").setData(ByteString.copyFromUtf8("hi"))
            .setTime(Timestamp.newBuilder().setSeconds(5).setNanos(6)))
        .build().toByteArray();
    Message m = codec.decode(raw).get(0);
    assertThat(m.id()).isEqualTo("go-1");
    assertThat(m.stream()).isEqualTo("t");
    assertThat(m.key()).isEmpty();
    assertThat(m.headers()).containsEntry("x", "y");
    assertThat(m.contentType()).isEqualTo("c");
    assertThat(new String(m.data(), StandardCharsets.UTF_8)).isEqualTo("hi");
    assertThat(m.time()).isEqualTo(Instant.ofEpochSecond(5, 6));
  }

  @Test
  void garbageBytesRaiseUndecodableBatch() {
    assertThatThrownBy(() -> codec.decode(new byte[] {(byte) 0xff, (byte) 0xff, 0x01}))
        .isInstanceOf(UndecodableBatchException.class).hasMessageContaining("raw_data");
    assertThatThrownBy(() -> codec.decode("not protobuf at all".getBytes(StandardCharsets.UTF_8)))
        .isInstanceOf(UndecodableBatchException.class);
    assertThatThrownBy(() -> codec.decode(new byte[0]))
        .isInstanceOf(UndecodableBatchException.class).hasMessageContaining("no messages");
  }

  @Test
  void parsableButInvalidMessagesRaiseUndecodableBatch() {
    byte[] noStream = TransportMessageBatch.newBuilder()
        .addMessages(TransportMessage.newBuilder().setMessageId("x")
            .setTime(Timestamp.newBuilder().setSeconds(1)))
        .build().toByteArray();
    assertThatThrownBy(() -> codec.decode(noStream))
        .isInstanceOf(UndecodableBatchException.class).hasMessageContaining("stream");
    // Go's zero time.Time, for example: a Kafka timestamp cannot be negative.
    byte[] before1970 = TransportMessageBatch.newBuilder()
        .addMessages(TransportMessage.newBuilder().setMessageId("x").setStreamName("s")
            .setTime(Timestamp.newBuilder().setSeconds(-62135596800L)))
        .build().toByteArray();
    assertThatThrownBy(() -> codec.decode(before1970))
        .isInstanceOf(UndecodableBatchException.class).hasMessageContaining("1970");
  }

  /** The parser aliases raw_data; each decoded payload must still be a copy of its own. */
  @Test
  void decodedPayloadsDoNotShareRawData() {
    Message m = Message.builder().stream("s").data(new byte[] {1, 2, 3}).build();
    byte[] raw = codec.encode(List.of(m));

    Message decoded = codec.decode(raw).get(0);
    java.util.Arrays.fill(raw, (byte) 0);

    assertThat(decoded.data()).containsExactly(1, 2, 3);
  }

  /** A stray end-group tag is refused, not taken for the batch's end, by the aliasing parser too. */
  @Test
  void strayEndGroupTagRaisesUndecodableBatch() {
    byte[] valid = codec.encode(List.of(Message.builder().stream("s").data("x").build()));
    byte[] withEndGroup = java.util.Arrays.copyOf(valid, valid.length + 2);
    withEndGroup[valid.length] = 0x0C; // field 1, wire type 4 (end group)
    withEndGroup[valid.length + 1] = 0x0A; // what follows would be read as more messages

    assertThatThrownBy(() -> codec.decode(withEndGroup))
        .isInstanceOf(UndecodableBatchException.class).hasMessageContaining("raw_data");
  }
}
