from trainer.swav.train import main

main()
