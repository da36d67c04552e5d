// s3rver ships no types; the benchmarks use only its constructor, run() and close().
declare module 's3rver';
