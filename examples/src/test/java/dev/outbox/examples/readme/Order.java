package dev.outbox.examples.readme;

/** The README's order: an id and a JSON rendering. */
record Order(String id, String customer) {
  String toJson() {
    return "{\"id\":\"" + id + "\",\"customer\":\"" + customer + "\"}";
  }
}
