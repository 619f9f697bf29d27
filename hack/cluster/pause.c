/*
 * Minimal pod sandbox ("pause") process for the test cluster's pause image.
 * It holds the pod's namespaces open and does nothing else:
 *  - blocks in pause() forever,
 *  - reaps any zombie it inherits (it is PID 1 of the pod when the pod
 *    shares its PID namespace),
 *  - exits 0 on SIGINT/SIGTERM so the runtime can stop it quickly.
 * Built with `gcc -static` by images.sh.
 */
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

static void on_stop(int sig) {
  static const char msg[] = "pause: stopping\n";
  (void)sig;
  (void)!write(STDERR_FILENO, msg, sizeof msg - 1);
  _exit(0);
}

static void on_child(int sig) {
  (void)sig;
  while (waitpid(-1, NULL, WNOHANG) > 0) {
  }
}

int main(int argc, char **argv) {
  struct sigaction stop, child;

  if (argc > 1 && strcmp(argv[1], "-v") == 0) {
    puts("pause (lifecycle-operator test cluster)");
    return 0;
  }
  if (getpid() != 1)
    fputs("pause: warning: not running as PID 1\n", stderr);

  memset(&stop, 0, sizeof stop);
  stop.sa_handler = on_stop;
  sigaction(SIGINT, &stop, NULL);
  sigaction(SIGTERM, &stop, NULL);

  memset(&child, 0, sizeof child);
  child.sa_handler = on_child;
  child.sa_flags = SA_NOCLDSTOP | SA_RESTART;
  sigaction(SIGCHLD, &child, NULL);

  for (;;)
    pause();
}
