/* Records uncaught errors, rejections and console.error on <html> for tests (and humans). */
(function () {
  var root = document.documentElement, log = [];
  function record(text) {
    log.push(String(text));
    root.setAttribute("data-js-errors", String(log.length));
    root.setAttribute("data-js-error-log", log.join(" | ").slice(0, 4000));
  }
  window.onerror = function (msg, src, line, col) {
    record(msg + " (line " + line + ":" + col + ")");
  };
  window.addEventListener("unhandledrejection", function (e) {
    record("unhandled rejection: " + e.reason);
  });
  var original = console.error;
  console.error = function () {
    record("console.error: " + Array.prototype.join.call(arguments, " "));
    return original.apply(console, arguments);
  };
})();
