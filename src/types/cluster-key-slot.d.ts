/** The slot of a key on Redis Cluster (CRC16 of its hash tag, or of the whole key), as ioredis computes it. */
declare module 'cluster-key-slot' {
  export default function calculateSlot(key: string): number;
}
