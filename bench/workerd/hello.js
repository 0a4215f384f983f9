// The hello of picloud-bench's comparison: every request answers `hello`, like the
// baselines and PiCloud's "hello" script.
export default {
  fetch() {
    return new Response("hello");
  },
};
