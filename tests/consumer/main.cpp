// A program outside mechlens that uses it as a package: loads a checkpoint and prints the argmax
// next token. Built by both consumer projects (find_package and add_subdirectory).
#include <cstdio>

#include <mechlens/models/load.hpp>

int main(int argc, char** argv) {
  if (argc != 2) {
    std::fprintf(stderr, "usage: consumer MODEL_DIR\n");
    return 2;
  }
  at::NoGradGuard no_grad;
  mechlens::Model model = mechlens::load_model(argv[1]);
  at::Tensor ids = at::tensor(std::vector<int64_t>{5, 17, 42}, at::TensorOptions().dtype(at::kLong)).view({1, 3});
  at::Tensor logits = model->forward(ids);
  std::printf("consumer: %lld layers, next token %lld\n", (long long)model->config().n_layers(),
              (long long)logits[0][-1].argmax().item<int64_t>());
  return 0;
}
