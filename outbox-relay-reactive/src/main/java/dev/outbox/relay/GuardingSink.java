package dev.outbox.relay;

/**
 * A sink that checks each record's {@link SendGuard} right before handing it to the producer
 * (both of the library's sinks). Only behind such a sink does PARTITIONED send several rows of
 * one key as one unit: a custom sink cannot see the guard, so there a key has one row in flight.
 */
interface GuardingSink extends RecordSink {}
